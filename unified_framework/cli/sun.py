"""``mdlma sun``: train SUN models and segment volumes with multi-axis soft voting.

Examples
--------
``mdlma sun train --pair scan.tif labels.tif --out sun.pt --axes 9 --steps 2000``
``mdlma sun predict scan.zarr --model sun.pt --out seg.zarr --axes 9``
``mdlma sun plan scan.zarr --axes 9 --slabs 4 --count``
``mdlma sun predict scan.zarr --model sun.pt --out seg.zarr --slabs 4 --piece-index $SLURM_ARRAY_TASK_ID``
``mdlma sun merge .seg.zarr.sun-work --out seg.zarr``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sun",
        help="SUN multi-axis U-Net segmentation: train, predict, plan, merge",
        description=(
            "SUN (Scaling the U-net): a 2D U-Net predicts slices along 3 or 9 axes and fuses the class "
            "probabilities by soft voting. See docs/sun.md."
        ),
    )
    actions = parser.add_subparsers(dest="sun_action", metavar="ACTION")
    actions.required = True
    _register_train(actions)
    _register_predict(actions)
    _register_plan(actions)
    _register_merge(actions)
    info = actions.add_parser("info", help="show what a model package holds")
    info.add_argument("model", type=Path, metavar="MODEL")
    info.set_defaults(func=_info)


def _common_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU if present; default)"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)"
    )


def _register_train(actions) -> None:
    train = actions.add_parser(
        "train",
        help="train a SUN model from (volume, labels) pairs",
        description="Train a 2D U-Net on slices from all chosen axes. Resumes from the checkpoint next to --out unless --no-resume.",
    )
    train.add_argument(
        "--pair",
        nargs=2,
        action="append",
        required=True,
        metavar=("IMAGE", "LABELS"),
        help="a training volume and its labels (repeatable)",
    )
    train.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="MODEL",
        help="model package to write (e.g. sun.pt)",
    )
    train.add_argument(
        "--axes", default="9", help="3, 9 or a comma-separated list such as z,y,x,y+x (default 9)"
    )
    train.add_argument("--depth", type=int, default=4, help="U-Net levels (default 4)")
    train.add_argument(
        "--width", type=int, default=16, help="feature maps of the first level (default 16)"
    )
    train.add_argument(
        "--norm",
        default="batch",
        choices=("batch", "instance", "group", "none"),
        help="normalisation layers (default batch)",
    )
    train.add_argument(
        "--dropout", type=float, default=0.0, help="dropout in the two deepest levels (default 0)"
    )
    train.add_argument(
        "--input-size",
        type=int,
        default=128,
        help="side of the square training patches (default 128)",
    )
    train.add_argument("--batch-size", type=int, default=8, help="patches per step (default 8)")
    train.add_argument(
        "--steps", type=int, default=2000, help="maximum optimisation steps (default 2000)"
    )
    train.add_argument(
        "--lr", type=float, default=2e-3, help="initial learning rate of AdamW (default 0.002)"
    )
    train.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="last share of each volume's z slices held out (default 0.2)",
    )
    train.add_argument(
        "--val-pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("IMAGE", "LABELS"),
        help="a separate validation volume and its labels (repeatable; replaces --val-fraction)",
    )
    train.add_argument(
        "--val-every", type=int, default=100, help="validate every N steps (default 100)"
    )
    train.add_argument(
        "--patience",
        type=int,
        default=10,
        help="stop after N validations without improvement (0: never; default 10)",
    )
    train.add_argument(
        "--checkpoint-every", type=int, default=100, help="checkpoint every N steps (default 100)"
    )
    train.add_argument(
        "--log-every", type=int, default=10, help="training metrics line every N steps (default 10)"
    )
    train.add_argument(
        "--metrics", type=Path, metavar="JSONL", help="metrics file (default MODEL.metrics.jsonl)"
    )
    train.add_argument(
        "--no-resume", action="store_true", help="start afresh even if a checkpoint exists"
    )
    train.add_argument(
        "--no-augment", action="store_true", help="no flips, rotations, intensity changes, noise"
    )
    train.add_argument(
        "--class-weights",
        action="store_true",
        help="weight the cross-entropy by inverse sqrt class frequency",
    )
    train.add_argument(
        "--class-names",
        nargs="+",
        metavar="NAME",
        help="one name per class (default: class 0, class 1, ...)",
    )
    train.add_argument(
        "--num-classes", type=int, help="number of classes (default: largest label + 1)"
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _common_runtime(train)
    train.set_defaults(func=_train)


def _register_predict(actions) -> None:
    predict = actions.add_parser(
        "predict",
        help="segment a volume (resumable; --piece runs one part of a split run)",
        description=(
            "Predict slices along every chosen axis and fuse the probabilities in one accumulator on disk. "
            "A killed run continues where it stopped when started again with the same arguments. "
            "With --piece/--piece-index only that piece runs (e.g. one SLURM array task); fuse with 'mdlma sun merge'."
        ),
    )
    predict.add_argument(
        "volume",
        nargs="+",
        type=str,
        metavar="VOLUME",
        help="input volume; several files are the channels",
    )
    predict.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="FILE",
        help="model package from 'mdlma sun train'",
    )
    predict.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="label volume to write (format from the suffix)",
    )
    predict.add_argument(
        "--axes", help="3, 9 or a comma-separated list (default: the model's training axes)"
    )
    _output_options(predict)
    predict.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="work directory (default .OUT.sun-work next to OUT)",
    )
    predict.add_argument(
        "--slabs", type=int, default=1, help="slabs per axis; pieces = axes x slabs (default 1)"
    )
    which = predict.add_mutually_exclusive_group()
    which.add_argument(
        "--piece", metavar="AXIS[:SLAB]", help="run only this piece into the work directory"
    )
    which.add_argument(
        "--piece-index",
        type=int,
        metavar="I",
        help="run only piece I of 'mdlma sun plan' (SLURM array index)",
    )
    budget = predict.add_mutually_exclusive_group()
    budget.add_argument(
        "--memory",
        type=int,
        default=None,
        metavar="MB",
        help="memory budget: half for activations, slices and reading, half caching accumulator chunks (default 512)",
    )
    budget.add_argument(
        "--job-memory",
        type=int,
        metavar="MB",
        help="the job's memory instead of --memory: the budget is half of what the runtime (1 GB) leaves, at least 64 MB",
    )
    predict.add_argument(
        "--chunks",
        type=int,
        nargs=3,
        default=[64, 64, 64],
        metavar=("Z", "Y", "X"),
        help="accumulator chunk shape (default 64 64 64)",
    )
    predict.add_argument(
        "--max-groups",
        type=int,
        metavar="N",
        help="stop after N slice groups; run again to continue (time-sliced jobs)",
    )
    _common_runtime(predict)
    predict.set_defaults(func=_predict)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probabilities",
        type=Path,
        metavar="OUT.zarr",
        help="also write the fused probabilities (float16, classes x z x y x)",
    )
    parser.add_argument(
        "--uncertainty",
        type=Path,
        metavar="PATH",
        help="normalised entropy of the fused distribution (default OUT_entropy.SUFFIX)",
    )
    parser.add_argument(
        "--disagreement",
        type=Path,
        metavar="PATH",
        help="share of axes disagreeing with the fused label (default OUT_disagreement.SUFFIX)",
    )
    parser.add_argument(
        "--no-uncertainty", action="store_true", help="write neither entropy nor disagreement"
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the work directory after the outputs are written",
    )


def _register_plan(actions) -> None:
    plan = actions.add_parser(
        "plan",
        help="list the pieces (axis x slab) of a split prediction",
        description="Print the pieces 'mdlma sun predict --piece-index I' runs; a SLURM array spans 0..count-1.",
    )
    plan.add_argument(
        "volume", type=str, metavar="VOLUME", help="input volume (only its shape is read)"
    )
    plan.add_argument(
        "--axes",
        default="9",
        help="3, 9 or a comma-separated list (default 9; use the same as for predict)",
    )
    plan.add_argument("--slabs", type=int, default=1, help="slabs per axis (default 1)")
    shown = plan.add_mutually_exclusive_group()
    shown.add_argument("--count", action="store_true", help="print only the number of pieces")
    shown.add_argument("--json", action="store_true", help="print the pieces as JSON")
    plan.set_defaults(func=_plan)


def _register_merge(actions) -> None:
    merge = actions.add_parser(
        "merge",
        help="fuse the pieces of a split prediction and write the outputs",
        description="Add every piece's votes to the accumulator (order-independent, resumable) and write the outputs.",
    )
    merge.add_argument(
        "workdir", type=Path, metavar="WORKDIR", help="work directory of the split run"
    )
    merge.add_argument(
        "--out", type=Path, required=True, metavar="OUT", help="label volume to write"
    )
    _output_options(merge)
    merge.set_defaults(func=_merge)


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _sibling(path: Path, tag: str) -> Path:
    """``seg.nii.gz`` -> ``seg_entropy.nii.gz``; folders get the tag appended."""
    suffixes = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    return path.with_name(f"{stem}_{tag}{suffixes}")


def _outputs(args: argparse.Namespace):
    from ..sun.inference import Outputs

    entropy = disagreement = None
    if not args.no_uncertainty:
        entropy = args.uncertainty or _sibling(args.out, "entropy")
        disagreement = args.disagreement or _sibling(args.out, "disagreement")
    return Outputs(args.out, args.probabilities, entropy, disagreement)


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_volume
    from ..sun.networks import UNetConfig
    from ..sun.training import TrainingConfig, train_sun

    _set_threads(args)

    def read_pairs(pairs):
        images, labels, names = [], [], []
        for image_path, labels_path in pairs:
            image, label = (
                read_volume(image_path, expect_ndim=3, allow_nan=False, grey=True),
                read_volume(labels_path, expect_ndim=3, grey=True),
            )
            images.append(np.asarray(image.data))
            labels.append(np.asarray(label.data))
            names.append(f"{image_path} + {labels_path}")
        return images, labels, names

    images, labels, names = read_pairs(args.pair)
    val_images, val_labels, val_names = read_pairs(args.val_pair)
    spacing = read_volume(args.pair[0][0], lazy=True, expect_ndim=3, grey=True).spacing
    config = TrainingConfig(
        axes=args.axes,
        network=UNetConfig(
            depth=args.depth,
            base_width=args.width,
            norm=args.norm,
            dropout=args.dropout,
            input_size=args.input_size,
        ),
        batch_size=args.batch_size,
        steps=args.steps,
        learning_rate=args.lr,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        patience=args.patience,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        augment=not args.no_augment,
        class_weighting=args.class_weights,
        seed=args.seed,
        device=None if args.device == "auto" else args.device,
    )
    result = train_sun(
        images,
        labels,
        args.out,
        config,
        class_names=args.class_names,
        num_classes=args.num_classes,
        voxel_size=spacing,
        sources=names,
        val_images=val_images,
        val_labels=val_labels,
        val_sources=val_names,
        metrics_path=args.metrics,
        resume=not args.no_resume,
        progress=True,
    )
    best = (
        "n/a"
        if result.best_score == float("-inf")
        else f"{result.best_score:.3f} at step {result.best_step}"
    )
    print(
        f"wrote {result.model_path} after {result.steps} steps (best validation mean Dice {best}{', stopped early' if result.stopped_early else ''})"
    )
    print(f"metrics: {result.metrics_path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..sun.inference import predict_to_files
    from ..sun.inference.budget import MemoryBudget

    _set_threads(args)
    if args.job_memory is not None:
        memory_mb = MemoryBudget.job_budget_mb(args.job_memory)
    else:
        memory_mb = 512 if args.memory is None else args.memory
        if memory_mb < 16:
            raise InputError(f"--memory {memory_mb}: expected at least 16 MB")
    piece = args.piece if args.piece is not None else args.piece_index
    result = predict_to_files(
        args.volume,
        args.model,
        _outputs(args),
        axes=args.axes,
        workdir=args.work_dir,
        slabs=args.slabs,
        piece=piece,
        chunks=args.chunks,
        memory_budget=memory_mb * 2**20,
        device=args.device,
        max_groups=args.max_groups,
        keep_work=args.keep_work,
        progress=True,
    )
    stats = result["stats"]
    if piece is not None:
        state = "finished" if result["complete"] else "stopped early (run again to continue)"
        print(f"piece {piece}: {state}; work directory {result['workdir']}")
        return 0
    if not result["complete"]:
        print(
            f"stopped after {stats.units} slice groups; run the same command again to continue ({result['workdir']})"
        )
        return 0
    voxels = 1
    for n in result["plan"].shape:
        voxels *= n
    print(
        f"segmented {voxels} voxels along {len(result['plan'].axes)} axes in {result['seconds']:.1f} s (network {stats.network_seconds:.1f} s)"
    )
    for path in result["written"]:
        print(f"wrote {path}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..io import read_volume
    from ..sun.axes import parse_axes
    from ..sun.inference.workdir import slab_bounds

    if args.slabs < 1:
        raise InputError(f"--slabs {args.slabs}: expected a positive number")
    shape = read_volume(args.volume, lazy=True, expect_ndim=3, grey=True).shape
    pieces = slab_bounds(shape, parse_axes(args.axes), args.slabs)
    if args.count:
        print(len(pieces))
    elif args.json:
        print(
            json.dumps(
                [
                    {"index": i, "piece": f"{a}:{s}", "units": [u0, u1]}
                    for i, (a, s, u0, u1) in enumerate(pieces)
                ],
                indent=1,
            )
        )
    else:
        print(f"{len(pieces)} pieces (SLURM: --array=0-{len(pieces) - 1})")
        for index, (axis, slab, u0, u1) in enumerate(pieces):
            print(f"{index:4d}  {axis}:{slab}  units {u0}..{u1 - 1}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from ..sun.inference import merge_to_files

    for path in merge_to_files(
        args.workdir, _outputs(args), keep_work=args.keep_work, progress=True
    ):
        print(f"wrote {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..sun.model_package import load_model

    model = load_model(args.model)
    print(
        json.dumps(
            {
                "architecture": asdict(model.config),
                "class_names": model.class_names,
                "axes": list(model.axes),
                "voxel_size": list(model.voxel_size),
                "input_dtype": model.input_dtype,
                "normalization": asdict(model.normalization),
                "provenance": model.provenance,
            },
            indent=1,
        )
    )
    return 0
