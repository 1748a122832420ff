"""``mdlma register``: align two scans (affine, convexAdam, VoxelMorph), apply fields, train VoxelMorph.

Examples
--------
``mdlma sample pair pair/ --shape 64 64 64``
``mdlma register convexadam pair/fixed.tif pair/moving.tif --out reg/ --fixed-labels pair/fixed_labels.tif --moving-labels pair/moving_labels.tif --landmarks pair/landmarks.csv``
``mdlma register apply reg/field.mha pair/moving_labels.tif --out labels_on_fixed.tif --interpolation nearest``
``mdlma register voxelmorph-train --pair a/fixed.tif a/moving.tif --out vxm.pt --steps 500``
``mdlma register voxelmorph pair/fixed.tif pair/moving.tif --model vxm.pt --out reg-vxm/``
"""

from __future__ import annotations

import argparse
from pathlib import Path


def volume_suffix(text: str) -> str:
    """argparse type of ``--suffix``: a file suffix such as ``.tif`` or ``.nii.gz``."""
    from ..io.formats import detect_format

    if not text.startswith(".") or "/" in text or len(text) > 10:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a file suffix such as .tif, .nii.gz or .zarr"
        )
    try:
        detect_format(Path(f"volume{text}"), for_writing=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def check_writable(path: Path) -> None:
    """Refuse an output whose folder cannot be written, before any long computation."""
    import os

    from ..errors import InputError

    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"{path}: cannot write in {folder} (permission denied); choose another output"
        )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register two 3D scans (affine, convexAdam, VoxelMorph), apply fields, train VoxelMorph",
        description=(
            "Align a moving scan to a fixed one and report the quality (Jacobian/folding, Dice/HD95 of labels, "
            "landmark TRE, NCC/MI before and after). See docs/registration.md."
        ),
    )
    actions = parser.add_subparsers(dest="register_action", metavar="ACTION")
    actions.required = True
    for method, text in (
        ("affine", "rigid or affine alignment only (SimpleITK, Mattes mutual information)"),
        ("convexadam", "deformable: convexAdam with MIND-SSC features (also across modalities)"),
        ("voxelmorph", "deformable: a trained VoxelMorph model (see voxelmorph-train)"),
    ):
        _register_method(actions, method, text)
    _register_train(actions)
    _register_apply(actions)


def _register_method(actions, method: str, text: str) -> None:
    p = actions.add_parser(
        method,
        help=text,
        description=f"{text}. Writes field.mha, warped volume(s), jacobian.tif and quality.json to --out.",
    )
    p.add_argument("fixed", type=Path, metavar="FIXED", help="the reference volume")
    p.add_argument("moving", type=Path, metavar="MOVING", help="the volume to align to FIXED")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="result folder (written atomically; replaced if it exists)",
    )
    p.add_argument(
        "--fixed-labels",
        type=Path,
        metavar="LABELS",
        help="labels of FIXED (Dice/HD95 before and after)",
    )
    p.add_argument(
        "--moving-labels",
        type=Path,
        metavar="LABELS",
        help="labels of MOVING (warped with the field)",
    )
    p.add_argument(
        "--landmarks",
        type=Path,
        metavar="CSV",
        help="landmark pairs in micrometres: fixed_z,fixed_y,fixed_x,moving_z,moving_y,moving_x",
    )
    if method == "affine":
        p.add_argument(
            "--kind",
            choices=("affine", "rigid"),
            default="affine",
            help="transform (default affine)",
        )
    else:
        p.add_argument(
            "--prealign",
            choices=("affine", "rigid", "none"),
            default="affine",
            help="SimpleITK pre-alignment first (default affine)",
        )
    p.add_argument(
        "--bin",
        type=int,
        metavar="N",
        help="estimate on a copy binned N times (default: from the size, at most 256^3 voxels)",
    )
    p.add_argument(
        "--suffix",
        type=volume_suffix,
        default=".tif",
        help="format of the warped volumes when not binned (default .tif; e.g. .nii.gz, .zarr)",
    )
    if method == "convexadam":
        from ..registration.convexadam import PRESETS, ConvexAdamParams

        d = ConvexAdamParams()
        # Defaults are None so that a preset's values apply unless an option is given.
        p.add_argument(
            "--preset",
            choices=tuple(PRESETS),
            default="package",
            help="package: convexAdam's own defaults (default); fast: a coarse-to-fine Adam "
            f"({PRESETS['fast']}), several times faster at 128^3 for a Dice about 0.003 lower "
            "(docs/registration.md); the options below override either",
        )
        p.add_argument(
            "--mind-r",
            type=int,
            default=None,
            help=f"MIND-SSC patch radius (default {d.mind_r})",
        )
        p.add_argument(
            "--mind-d", type=int, default=None, help=f"MIND-SSC dilation (default {d.mind_d})"
        )
        p.add_argument(
            "--lambda-weight",
            type=float,
            default=None,
            help=f"regulariser weight of the Adam step (default {d.lambda_weight})",
        )
        p.add_argument(
            "--grid-sp",
            type=int,
            default=None,
            help=f"control-point spacing of the convex step, voxels (default {d.grid_sp})",
        )
        p.add_argument(
            "--disp-hw",
            type=int,
            default=None,
            help=f"search half width in control-point steps (default {d.disp_hw})",
        )
        p.add_argument(
            "--niter",
            type=int,
            default=None,
            help=f"Adam iterations (default {d.selected_niter})",
        )
        p.add_argument(
            "--smooth",
            type=int,
            default=None,
            help=f"odd box size of a final smoothing, 0: none (default {d.selected_smooth})",
        )
        p.add_argument(
            "--grid-sp-adam",
            type=int,
            default=None,
            help=f"grid spacing of the Adam step, voxels (default {d.grid_sp_adam})",
        )
        p.add_argument(
            "--coarse-niter",
            type=int,
            default=None,
            help="Adam iterations on a grid twice as coarse before --niter (not a package "
            f"parameter; default {d.coarse_niter})",
        )
        p.add_argument(
            "--lr",
            type=float,
            default=None,
            help=f"learning rate of the --niter Adam iterations (the package's is {d.lr}; not a package parameter)",
        )
        p.add_argument("--no-ic", action="store_true", help="skip the inverse-consistency step")
        p.add_argument(
            "--downsample",
            type=int,
            default=None,
            metavar="N",
            help="run convexAdam on a copy binned N times and upsample the field (not a package parameter; "
            "default: 2 when every side has >= 96 voxels, else 1)",
        )
    if method == "voxelmorph":
        p.add_argument(
            "--model",
            type=Path,
            required=True,
            metavar="MODEL",
            help="model from 'mdlma register voxelmorph-train'",
        )
    if method != "affine":
        p.add_argument(
            "--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU if present; default)"
        )
    p.add_argument(
        "--json", action="store_true", help="print the quality report as JSON instead of a table"
    )
    p.set_defaults(func=_run, method=method)


def _register_train(actions) -> None:
    from ..registration.voxelmorph import VoxelMorphConfig

    d = VoxelMorphConfig()
    t = actions.add_parser(
        "voxelmorph-train",
        help="train a VoxelMorph model on (fixed, moving) pairs",
        description="Unsupervised training (similarity + smoothness). Resumes from the checkpoint next to --out unless --no-resume.",
    )
    t.add_argument(
        "--pair",
        nargs=2,
        action="append",
        required=True,
        metavar=("FIXED", "MOVING"),
        help="a training pair (repeatable)",
    )
    t.add_argument(
        "--val-pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("FIXED", "MOVING"),
        help="a validation pair (repeatable)",
    )
    t.add_argument(
        "--out", type=Path, required=True, metavar="MODEL", help="model file to write (e.g. vxm.pt)"
    )
    t.add_argument(
        "--loss",
        choices=("ncc", "mse"),
        default=d.loss,
        help=f"image similarity (default {d.loss})",
    )
    t.add_argument(
        "--smoothness",
        type=float,
        default=d.smoothness,
        help=f"weight of the gradient penalty (default {d.smoothness})",
    )
    t.add_argument(
        "--features",
        type=int,
        nargs="+",
        default=d.features,
        metavar="N",
        help="feature maps per U-Net level (default 16 16 16 16 16)",
    )
    t.add_argument(
        "--downsample",
        type=int,
        default=d.downsample,
        metavar="N",
        help="train (and later register) on copies binned N times; 2 is ~8x faster for smooth deformations (default 1)",
    )
    t.add_argument(
        "--steps", type=int, default=d.steps, help=f"optimisation steps (default {d.steps})"
    )
    t.add_argument(
        "--patch-size",
        type=int,
        default=d.patch_size,
        help=f"side of the training patches (default {d.patch_size})",
    )
    t.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"pairs per step (default {d.batch_size})",
    )
    t.add_argument(
        "--lr",
        type=float,
        default=d.learning_rate,
        help=f"Adam learning rate (default {d.learning_rate})",
    )
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help=f"checkpoint every N steps (default {d.checkpoint_every})",
    )
    t.add_argument(
        "--log-every",
        type=int,
        default=d.log_every,
        help=f"metrics line every N steps (default {d.log_every})",
    )
    t.add_argument(
        "--val-every",
        type=int,
        default=d.val_every,
        help=f"validate every N steps (default {d.val_every})",
    )
    t.add_argument(
        "--metrics", type=Path, metavar="JSONL", help="metrics file (default MODEL.metrics.jsonl)"
    )
    t.add_argument(
        "--no-resume", action="store_true", help="start afresh even if a checkpoint exists"
    )
    t.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    t.set_defaults(func=_train)


def _register_apply(actions) -> None:
    a = actions.add_parser(
        "apply",
        help="warp a volume (or labels) with a saved field",
        description="Warp VOLUME (anywhere in world coordinates: its origin, direction and spacing are honoured) "
        "with FIELD (field.mha of a registration) onto the fixed grid; a binned field is upsampled block by block.",
    )
    a.add_argument("field", type=Path, metavar="FIELD", help="field.mha from 'mdlma register'")
    a.add_argument(
        "volume", type=Path, metavar="VOLUME", help="the moving volume or labels to warp"
    )
    a.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="warped volume to write (format from the suffix)",
    )
    a.add_argument(
        "--reference",
        type=Path,
        metavar="FIXED",
        help="volume whose grid the output takes (the full-resolution fixed volume; only its shape and geometry are read). "
        "Default: VOLUME's grid if it lies in the field's world frame, else the field's grid",
    )
    a.add_argument(
        "--interpolation",
        choices=("linear", "nearest"),
        default="linear",
        help="linear for images, nearest for labels (default linear)",
    )
    a.set_defaults(func=_apply)


def _read(path: Path, lazy: bool = False):
    from ..io import read_volume

    return read_volume(path, expect_ndim=3, lazy=lazy)


def _run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..io.volume import check_finite
    from ..registration import quality_rows, read_landmarks, register_volumes, write_outputs
    from ..registration.run import auto_bin

    check_writable(args.out)
    fixed = _read(args.fixed, lazy=True)
    moving = _read(args.moving, lazy=True)
    factor = args.bin if args.bin is not None else auto_bin(fixed.shape)
    if factor < 1:
        raise InputError(f"--bin {factor}: expected a positive integer")
    lazy = factor > 1
    if not lazy:
        fixed, moving = fixed.compute(), moving.compute()
    for volume in (fixed, moving):
        check_finite(volume)
    fixed_labels = _read(args.fixed_labels, lazy).data if args.fixed_labels else None
    moving_labels_volume = _read(args.moving_labels, lazy) if args.moving_labels else None
    landmarks = read_landmarks(args.landmarks) if args.landmarks else None
    params = None
    if args.method == "convexadam":
        from ..registration.convexadam import preset

        given = {
            "mind_r": args.mind_r,
            "mind_d": args.mind_d,
            "lambda_weight": args.lambda_weight,
            "grid_sp": args.grid_sp,
            "disp_hw": args.disp_hw,
            "selected_niter": args.niter,
            "selected_smooth": args.smooth,
            "grid_sp_adam": args.grid_sp_adam,
            "coarse_niter": args.coarse_niter,
            "lr": args.lr,
        }
        params = preset(
            args.preset,
            **{k: v for k, v in given.items() if v is not None},
            ic=not args.no_ic,
            downsample=args.downsample,
        )
    result = register_volumes(
        fixed.data,
        moving.data,
        fixed.spacing,
        args.method,
        moving_spacing=moving.spacing,
        origin=fixed.origin,
        direction=fixed.direction,
        moving_origin=moving.origin,
        moving_direction=moving.direction,
        prealign=args.kind if args.method == "affine" else args.prealign,
        bin=factor,
        params=params,
        model=getattr(args, "model", None),
        device=None if getattr(args, "device", "auto") == "auto" else args.device,
        fixed_labels=fixed_labels,
        moving_labels=None if moving_labels_volume is None else moving_labels_volume.data,
        landmarks=landmarks,
        names=(str(args.fixed), str(args.moving)),
        progress=True,
    )
    # Absolute, so the dashboard's Registration view finds the inputs from the result folder.
    sources = {
        key: str(Path(getattr(args, key)).absolute())
        for key in ("fixed", "moving", "fixed_labels", "moving_labels", "landmarks")
        if getattr(args, key)
    }
    write_outputs(
        args.out,
        result,
        moving_full=moving.data if lazy else None,
        moving_labels_full=None
        if moving_labels_volume is None or not lazy
        else moving_labels_volume.data,
        full_spacing=fixed.spacing,
        suffix=args.suffix,
        sources=sources,
        full_shape=fixed.shape,
        moving_affine=moving.affine,
    )
    if args.json:
        import json

        print(json.dumps(result.report, indent=2))
        return 0
    rows = [("figure", "before", "after"), *quality_rows(result.report)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(
        f"{args.method} ({result.report['prealign']} pre-alignment, bin {result.bin}) in {result.report['timings']['total_s']:.1f} s"
    )
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}")
    print(f"wrote {args.out}/ ({', '.join(sorted(p.name for p in args.out.iterdir()))})")
    return 0


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from ..registration.fields import to_fixed_grid
    from ..registration.voxelmorph import VoxelMorphConfig, train_voxelmorph

    def read_pairs(pairs):
        out, names = [], []
        for fixed_path, moving_path in pairs:
            fixed, moving = _read(Path(fixed_path)), _read(Path(moving_path))
            moving_data = to_fixed_grid(
                np.asarray(moving.data),
                moving.spacing,
                fixed.shape,
                fixed.spacing,
                name=str(moving_path),
                moving_origin=moving.origin,
                moving_direction=moving.direction,
                fixed_origin=fixed.origin,
                fixed_direction=fixed.direction,
            )
            out.append((np.asarray(fixed.data), moving_data))
            names.append(f"{fixed_path} + {moving_path}")
        return out, names

    check_writable(args.out)
    pairs, names = read_pairs(args.pair)
    val_pairs, _ = read_pairs(args.val_pair)
    config = VoxelMorphConfig(
        features=args.features,
        downsample=args.downsample,
        loss=args.loss,
        smoothness=args.smoothness,
        steps=args.steps,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        val_every=args.val_every,
        seed=args.seed,
        device=None if args.device == "auto" else args.device,
    )
    result = train_voxelmorph(
        pairs,
        args.out,
        config,
        val_pairs=val_pairs,
        sources=names,
        metrics_path=args.metrics,
        resume=not args.no_resume,
        progress=True,
    )
    print(f"wrote {result.model_path} after {result.steps} steps")
    print(f"metrics: {result.metrics_path}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import InputError
    from ..io import Volume, write_volume
    from ..registration import apply_field, load_field
    from ..registration.run import MAX_ESTIMATION_VOXELS, output_grid

    check_writable(args.out)
    field, field_spacing, origin, direction = load_field(args.field, geometry=True)
    volume = _read(args.volume, lazy=True)
    shape = out_spacing = None
    if args.reference:
        reference = _read(args.reference, lazy=True)
        if not (
            np.allclose(reference.origin, origin, atol=1e-3)
            and np.allclose(reference.direction, direction, atol=1e-4)
        ):
            raise InputError(
                f"{args.reference}: origin {reference.origin} / direction differ from the field's {origin}; "
                "expected the fixed volume the field was estimated on"
            )
        shape, out_spacing = reference.shape, reference.spacing
    # In memory only when it is small and the field is on its grid; else block by block.
    small = (
        tuple(field.shape[1:]) == volume.shape
        and int(np.prod(volume.shape)) <= MAX_ESTIMATION_VOXELS
    )
    data = volume.compute().data if small else volume.data
    shape, out_spacing, _ = output_grid(
        volume.shape,
        volume.spacing,
        field.shape[1:],
        field_spacing,
        volume.affine,
        origin,
        direction,
        shape,
        out_spacing,
    )
    warped = apply_field(
        data,
        field,
        volume.spacing,
        field_spacing,
        args.interpolation,
        volume_affine=volume.affine,
        field_origin=origin,
        field_direction=direction,
        shape=shape,
        out_spacing=out_spacing,
    )
    write_volume(args.out, Volume(warped, out_spacing, {}, None, origin, direction))
    print(f"wrote {args.out} {tuple(warped.shape)} {warped.dtype}")
    return 0
