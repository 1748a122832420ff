"""``mdlma sample``: list and write sample data (no download needed).

Examples
--------
``mdlma sample list``
``mdlma sample implant phantom.tif --gt phantom_labels.tif --shape 96 128 128 --seed 3``
``mdlma sample save ct-small ct.nii.gz``
``mdlma sample section section.tif --volume phantom.zarr --truth truth.json --seed 4``
``mdlma sample pair pair/ --shape 64 64 64 --multimodal``
``mdlma sample projections proj.h5 --phantom slices.tif --size 64 --angles 90``
``mdlma sample nuclei nuclei.tif --gt nuclei_labels.tif --shape 128 128 --seed 1``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .register import check_writable, volume_suffix


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="list and write sample data (implant phantom, images shipped with packages)",
        description="Sample data for trying and testing the framework; nothing is downloaded.",
    )
    actions = parser.add_subparsers(dest="sample_action", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="list the samples available here")
    listing.set_defaults(func=_list)

    implant = actions.add_parser(
        "implant",
        help="write a synthetic micro-CT phantom of a degrading Mg screw in bone, with ground truth",
        description=(
            "Write the implant phantom (classes 0 background, 1 bone, 2 residual implant, 3 degradation layer). "
            "The format follows the suffix of OUT (.tif, .h5, .nii.gz, .zarr, no suffix: TIFF slice folder)."
        ),
    )
    implant.add_argument("out", type=Path, metavar="OUT", help="grey-value volume to write")
    implant.add_argument(
        "--gt", type=Path, metavar="OUT_LABELS", help="also write the ground-truth labels here"
    )
    _add_shape(implant, "volume shape")
    implant.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; other seeds give other anatomy (default 0)",
    )
    _add_spacing(implant)
    implant.add_argument(
        "--noise",
        type=float,
        default=0.04,
        help="noise standard deviation at the implant's grey value (default 0.04)",
    )
    implant.add_argument(
        "--rings", type=float, default=0.03, help="ring-artefact amplitude (default 0.03)"
    )
    implant.add_argument(
        "--blur",
        type=float,
        default=0.8,
        help="partial-volume blur, Gaussian sigma in voxels (default 0.8)",
    )
    implant.add_argument(
        "--analytic",
        action="store_true",
        help="the analytic degrading cylinder (exact degradation quantities, see docs/analysis.md) instead of the screw",
    )
    implant.add_argument(
        "--thread",
        action="store_true",
        help="with --analytic: a threaded implant (the analytic degrading screw: known pitch, core radius, "
        "thread depth) instead of the cylinder",
    )
    implant.add_argument(
        "--days",
        type=float,
        nargs="+",
        metavar="D",
        help="with --analytic: a time series, one scan per day (OUT and OUT_LABELS get _dayNNN before the suffix)",
    )
    implant.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="UM_PER_DAY",
        help="with --days: radial degradation rate (default 1 µm/day)",
    )
    implant.add_argument(
        "--depth", type=float, metavar="UM", help="with --analytic: degradation depth (one scan)"
    )
    implant.add_argument(
        "--layer",
        type=float,
        metavar="UM",
        help="with --analytic: layer thickness (default 6 voxels)",
    )
    implant.add_argument(
        "--shell-width",
        type=float,
        metavar="UM",
        help="with --analytic: width of the bone shells (default 6 voxels)",
    )
    implant.add_argument(
        "--motion",
        type=float,
        default=2.0,
        metavar="VOXELS",
        help="with --days: sample motion between scans (default 2 voxels)",
    )
    implant.add_argument(
        "--truth",
        type=Path,
        metavar="JSON",
        help="with --analytic: write the exact quantities here",
    )
    implant.set_defaults(func=_implant)

    nuclei = actions.add_parser(
        "nuclei",
        help="write a fluorescence-like image of touching, irregular nuclei with instance masks (2D or 3D)",
        description="For StarDist (mdlma stardist) and the instance scores; 2 sides: 2D, 3 sides: 3D.",
    )
    nuclei.add_argument("out", type=Path, metavar="OUT", help="image to write")
    nuclei.add_argument("--gt", type=Path, metavar="OUT_LABELS", help="instance masks (uint16)")
    nuclei.add_argument(
        "--shape", type=int, nargs="+", default=[128, 128], help="Y X or Z Y X (default 128 128)"
    )
    nuclei.add_argument("--radius", type=float, default=7.0, help="mean radius, pixels (7)")
    nuclei.add_argument("--count", type=int, help="number of nuclei (default: a dense field)")
    nuclei.add_argument("--seed", type=int, default=0)
    nuclei.set_defaults(func=_nuclei)

    section = actions.add_parser(
        "section",
        help="write a synthetic stained histology section of the implant phantom, the phantom and the true plane",
        description=(
            "Cut the implant phantom at a random plane (tilt from z up to --max-tilt), map the classes to stain colours, "
            "average over the section thickness, shrink, rotate, shift and elastically deform it, tear it and add noise. "
            "Writes the RGB section (.tif/.ome.tif/.zarr), the phantom volume (--volume) and the ground truth (--truth JSON)."
        ),
    )
    section.add_argument(
        "out", type=Path, metavar="OUT", help="RGB section image to write (.tif, .ome.tif, .zarr)"
    )
    section.add_argument(
        "--volume", type=Path, required=True, metavar="VOLUME", help="write the phantom volume here"
    )
    section.add_argument(
        "--truth",
        type=Path,
        required=True,
        metavar="JSON",
        help="write the ground-truth plane and transform here",
    )
    _add_shape(section, "phantom shape")
    section.add_argument(
        "--seed", type=int, default=0, help="random seed of the phantom and the cut (default 0)"
    )
    section.add_argument(
        "--spacing",
        type=float,
        default=5.0,
        metavar="UM",
        help="isotropic voxel size (default 5 µm)",
    )
    section.add_argument(
        "--pixel-size", type=float, metavar="UM", help="section pixel size (default the voxel size)"
    )
    section.add_argument(
        "--thickness",
        type=float,
        default=10.0,
        metavar="UM",
        help="section thickness (default 10 µm)",
    )
    section.add_argument(
        "--max-tilt",
        type=float,
        default=25.0,
        metavar="DEG",
        help="largest tilt of the plane from the z axis (default 25)",
    )
    section.add_argument(
        "--labels",
        type=Path,
        metavar="IMAGE",
        help="also write the true class of every section pixel (label image in section pixels, 4 = glass)",
    )
    section.add_argument(
        "--volume-labels",
        type=Path,
        metavar="VOLUME",
        help="also write the phantom's label volume (a stand-in for a segmentation of the scan)",
    )
    section.set_defaults(func=_section)
    pair = actions.add_parser(
        "pair",
        help="write a registration pair from the phantom with a known deformation and its ground truth",
        description=(
            "Write OUT/fixed, moving, fixed_labels, moving_labels (format from --suffix), OUT/true_field.mha (the "
            "displacement a registration should find: fixed(p) = moving(p + u(p)), micrometres) and "
            "OUT/landmarks.csv. The folder appears atomically."
        ),
    )
    pair.add_argument(
        "out", type=Path, metavar="OUT", help="folder to write (replaced if it exists)"
    )
    _add_shape(pair, "volume shape")
    pair.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of anatomy, deformation and noise (default 0)",
    )
    _add_spacing(pair)
    pair.add_argument(
        "--displacement", type=float, default=3.0, help="largest displacement in voxels (default 3)"
    )
    pair.add_argument(
        "--smoothness",
        type=float,
        default=0.4,
        help="deformation correlation length as a share of the extent (default 0.4)",
    )
    pair.add_argument(
        "--multimodal",
        action="store_true",
        help="moving scan as a second modality: non-monotonic grey values, other noise",
    )
    pair.add_argument(
        "--landmarks", type=int, default=20, help="number of landmark pairs (default 20)"
    )
    pair.add_argument(
        "--suffix",
        type=volume_suffix,
        default=".tif",
        help="volume format (default .tif; e.g. .nii.gz, .h5, .zarr)",
    )
    pair.set_defaults(func=_pair)

    projections = actions.add_parser(
        "projections",
        help="write parallel-beam projections of a phantom slab (HDF5/NeXus) and the slab itself",
        description="Simulate parallel-beam projections (astra-toolbox) of a slab of the implant phantom "
        "without noise, for trying 'mdlma recon'; the angles are stored with the projections.",
    )
    projections.add_argument(
        "out", type=Path, metavar="OUT", help="projection stack to write (.h5/.nxs)"
    )
    projections.add_argument(
        "--phantom",
        type=Path,
        default=None,
        metavar="OUT_SLICES",
        help="also write the true slices here",
    )
    projections.add_argument(
        "--size", type=int, default=64, help="slice edge and detector width (default 64)"
    )
    projections.add_argument(
        "--rows", type=int, default=4, help="detector rows = slices (default 4)"
    )
    projections.add_argument(
        "--angles", type=int, default=90, help="projections over 180 degrees (default 90)"
    )
    projections.add_argument(
        "--noise", type=float, default=0.0, help="Gaussian noise sigma added (default 0)"
    )
    projections.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    projections.set_defaults(func=_projections)

    save = actions.add_parser("save", help="write a named sample (see 'mdlma sample list')")
    save.add_argument("name", metavar="NAME", help="sample name")
    save.add_argument(
        "out", type=Path, metavar="OUT", help="file or folder to write (format from the suffix)"
    )
    save.set_defaults(func=_save)


def _add_shape(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[64, 64, 64],
        metavar=("Z", "Y", "X"),
        help=f"{what} (default 64 64 64)",
    )


def _add_spacing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=[5.0, 5.0, 5.0],
        metavar=("Z", "Y", "X"),
        help="voxel size in micrometres (default 5 5 5)",
    )


def _list(args: argparse.Namespace) -> int:
    from ..data import list_samples

    samples = list_samples()
    width = max(len(s.name) for s in samples)
    for sample in samples:
        print(f"{sample.name:<{width}}  {sample.ndim}D  {sample.description}")
    return 0


def _day_path(path: Path, day: float) -> Path:
    """``scan.nii.gz`` -> ``scan_day028.nii.gz`` (a folder: ``scan_day028``)."""
    name = path.name
    stem = name.split(".")[0]
    rest = name[len(stem) :]
    tag = f"{int(day):03d}" if float(day).is_integer() else f"{day:g}"
    return path.with_name(f"{stem}_day{tag}{rest}")


def _analytic(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from ..data.degrading import make_degrading_cylinder, make_degrading_series
    from ..data.phantom import add_noise
    from ..errors import InputError
    from ..io import write_volume
    from ..utils.atomic import write_text_atomic

    extra = {"layer": args.layer, "shell_width": args.shell_width}
    truth: dict
    if args.thread:
        from ..data.degrading import make_degrading_screw

        if args.days or args.shell_width is not None:
            raise InputError(
                "--thread makes one scan of the degrading screw: no --days or --shell-width"
            )
        labels, truth = make_degrading_screw(
            args.shape, args.spacing, depth=args.depth, layer=args.layer
        )
        scans = [(args.out, args.gt, labels)]
    elif args.days:
        if args.depth is not None:
            raise InputError("--depth and --days exclude each other (the depth is rate x day)")
        series = make_degrading_series(
            args.days, args.rate, args.shape, args.spacing, motion=args.motion, **extra
        )
        scans = [
            (_day_path(args.out, d), _day_path(args.gt, d) if args.gt else None, lab)
            for d, (lab, _) in zip(args.days, series)
        ]
        truth = {
            "rate_um_per_day": args.rate,
            "days": list(args.days),
            "time_points": [t for _, t in series],
        }
    else:
        labels, truth = make_degrading_cylinder(args.shape, args.spacing, depth=args.depth, **extra)
        scans = [(args.out, args.gt, labels)]
    rng = np.random.default_rng(args.seed)
    lut = np.array([0.18, 0.62, 1.0, 0.5], np.float32)
    for out, gt, labels in scans:
        image = lut[labels]
        if args.blur > 0:
            from scipy import ndimage

            ndimage.gaussian_filter(image, args.blur, output=image, mode="nearest")
        if args.noise > 0:
            add_noise(image, args.noise, rng)
        write_volume(out, image, spacing=args.spacing)
        message = f"wrote {out} {image.shape} float32"
        if gt is not None:
            write_volume(gt, labels, spacing=args.spacing)
            message += f", {gt} uint8"
        print(message)
    if args.truth is not None:
        write_text_atomic(args.truth, json.dumps(truth, indent=2))
        print(f"wrote {args.truth} (exact quantities)")
    return 0


def _implant(args: argparse.Namespace) -> int:
    from ..data import make_implant_phantom
    from ..errors import InputError
    from ..io import write_volume

    if args.analytic:
        return _analytic(args)
    if args.days or args.truth or args.depth is not None or args.thread:
        raise InputError(
            "--days, --depth, --thread and --truth need --analytic (the degrading cylinder or screw)"
        )

    image, labels = make_implant_phantom(
        shape=args.shape,
        seed=args.seed,
        spacing=args.spacing,
        noise=args.noise,
        rings=args.rings,
        blur=args.blur,
    )
    write_volume(args.out, image, spacing=args.spacing)
    print(f"wrote {args.out} {image.shape} float32")
    if args.gt is not None:
        write_volume(args.gt, labels, spacing=args.spacing)
        print(f"wrote {args.gt} {labels.shape} uint8")
    return 0


def _projections(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import InputError
    from ..io import write_volume
    from ..recon import forward_project, projection_phantom, write_projections

    if not 8 <= args.size <= 2048 or not 1 <= args.rows <= 2048 or not 2 <= args.angles <= 10000:
        raise InputError(
            "projections: expected --size 8..2048, --rows 1..2048 and --angles 2..10000"
        )
    if not np.isfinite(args.noise) or args.noise < 0:
        raise InputError(
            f"--noise: expected a standard deviation >= 0, got {args.noise}", field="noise"
        )
    slab = projection_phantom(args.size, args.rows, args.seed)
    angles = np.linspace(0, np.pi, args.angles, endpoint=False)
    stack = forward_project(slab, angles)
    if args.noise:
        stack = stack + np.random.default_rng(args.seed).normal(0, args.noise, stack.shape).astype(
            np.float32
        )
    write_projections(args.out, stack, angles)
    print(f"wrote {args.out} {stack.shape} (angles, rows, detector) float32")
    if args.phantom is not None:
        write_volume(args.phantom, slab)
        print(f"wrote {args.phantom} {slab.shape} float32")
    return 0


def _nuclei(args: argparse.Namespace) -> int:
    from ..data.nuclei import make_nuclei
    from ..io import write_volume

    image, labels = make_nuclei(args.shape, args.count, args.radius, args.seed)
    write_volume(args.out, image)
    print(f"wrote {args.out} {image.shape} float32")
    if args.gt is not None:
        write_volume(args.gt, labels)
        print(f"wrote {args.gt} {labels.shape} uint16, {int(labels.max())} nuclei")
    return 0


def _section(args: argparse.Namespace) -> int:
    import json

    from ..data.section import make_section_sample
    from ..io import write_volume
    from ..utils.atomic import write_text_atomic

    volume, section, truth = make_section_sample(
        args.shape,
        seed=args.seed,
        spacing=args.spacing,
        pixel_size=args.pixel_size,
        thickness=args.thickness,
        max_tilt=args.max_tilt,
        maps=bool(args.labels or args.volume_labels),
    )
    classes, volume_labels = truth.pop("classes", None), truth.pop("volume_labels", None)
    truth.pop("world_um", None)
    write_volume(args.volume, volume)
    write_volume(args.out, section)
    if args.labels:
        write_volume(args.labels, _labels_image(classes, section))
        print(f"wrote {args.labels} {classes.shape} uint8 true classes of the section pixels")
    if args.volume_labels:
        write_volume(args.volume_labels, volume.with_data(volume_labels))
        print(f"wrote {args.volume_labels} {volume_labels.shape} uint8 phantom labels")
    truth["volume"]["path"] = str(args.volume)
    truth["section_path"] = str(args.out)
    write_text_atomic(args.truth, json.dumps(truth, indent=2))
    print(
        f"wrote {args.volume} {volume.shape} float32, {args.out} {section.shape} RGB, {args.truth}"
    )
    print(
        f"true plane: tilt {truth['tilt_deg']:.2f} deg, azimuth {truth['azimuth_deg']:.2f} deg, offset {truth['offset_um']:.2f} um"
    )
    return 0


def _labels_image(classes: Any, section: Any) -> Any:
    from ..io import Volume

    return Volume(classes, tuple(section.spacing))


def _pair(args: argparse.Namespace) -> int:
    from ..data import make_registration_pair
    from ..io import write_volume
    from ..registration.fields import save_field
    from ..registration.quality import write_landmarks
    from ..utils.atomic import atomic_path

    check_writable(args.out)
    pair = make_registration_pair(
        args.shape,
        seed=args.seed,
        spacing=args.spacing,
        displacement=args.displacement,
        smoothness=args.smoothness,
        multimodal=args.multimodal,
        landmarks=args.landmarks,
    )
    volumes = {
        "fixed": pair.fixed,
        "moving": pair.moving,
        "fixed_labels": pair.fixed_labels,
        "moving_labels": pair.moving_labels,
    }
    with atomic_path(args.out) as tmp:
        tmp.mkdir(parents=True)
        for name, data in volumes.items():
            write_volume(tmp / f"{name}{args.suffix}", data, spacing=pair.spacing)
        save_field(tmp / "true_field.mha", pair.field, pair.spacing)
        write_landmarks(tmp / "landmarks.csv", pair.fixed_points, pair.moving_points)
    kind = "multi-modal " if args.multimodal else ""
    print(
        f"wrote {kind}pair {args.out}/: {', '.join(f'{n}{args.suffix}' for n in volumes)}, true_field.mha, landmarks.csv {tuple(pair.fixed.shape)}"
    )
    return 0


def _save(args: argparse.Namespace) -> int:
    from ..data import load_sample
    from ..io import write_volume

    volume = load_sample(args.name)
    write_volume(args.out, volume)
    print(f"wrote {args.out} {volume.shape} {volume.dtype}")
    return 0
