"""``mdlma histology``: virtual sections of a volume and locating a real section in it.

Examples
--------
``mdlma histology section scan.zarr --angles 10 45 --offset -50 --thickness 5 --pixel-size 2.5 --out cut.tif``
``mdlma histology match scan.zarr section.tif --axis 1 0 0 --cone 30 --out match/``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "histology",
        help="virtual histology: cut virtual sections from a volume, locate a real section in it",
        description="Virtual sections (oblique planes or slabs of any orientation, in world µm) and the search for the plane "
        "a real histology section shows. See docs/histology.md.",
    )
    actions = parser.add_subparsers(dest="histology_action", metavar="ACTION")
    actions.required = True

    section = actions.add_parser(
        "section",
        help="cut a virtual section (or a stack of parallel ones) from VOLUME",
        description="Cut the plane given by --normal/--point (world z y x: a unit-free direction and a point in µm) or by "
        "--angles TILT AZIMUTH (degrees from --axis) and --offset (µm from the volume centre along the normal). The image "
        "is centred on the point; only the chunks near the plane are read.",
    )
    section.add_argument(
        "volume",
        metavar="VOLUME",
        help="grey 3D volume with its voxel size (FILE.h5::/dataset allowed)",
    )
    plane = section.add_mutually_exclusive_group(required=True)
    plane.add_argument(
        "--normal", type=float, nargs=3, metavar=("Z", "Y", "X"), help="plane normal (world z y x)"
    )
    plane.add_argument(
        "--angles",
        type=float,
        nargs=2,
        metavar=("TILT", "AZIMUTH"),
        help="normal tilted TILT degrees from --axis towards AZIMUTH",
    )
    section.add_argument(
        "--point",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="a point of the plane, world µm (with --normal; default the volume centre)",
    )
    section.add_argument(
        "--offset",
        type=float,
        default=0.0,
        metavar="UM",
        help="with --angles: distance from the volume centre along the normal (µm, default 0)",
    )
    section.add_argument(
        "--axis",
        type=float,
        nargs=3,
        default=[1.0, 0.0, 0.0],
        metavar=("Z", "Y", "X"),
        help="axis the --angles are measured from (default the z axis)",
    )
    section.add_argument(
        "--thickness",
        type=float,
        default=0.0,
        metavar="UM",
        help="section thickness in µm: mean over the slab (default 0: the plane)",
    )
    section.add_argument(
        "--pixel-size",
        type=float,
        metavar="UM",
        help="pixel size of the image in µm (default the smallest voxel size)",
    )
    section.add_argument(
        "--shape",
        type=int,
        nargs=2,
        metavar=("ROWS", "COLS"),
        help="image shape (default: the whole volume's projection)",
    )
    section.add_argument(
        "--count",
        type=int,
        default=1,
        metavar="N",
        help="N parallel sections (a microtome series), written as a (N, y, x) stack",
    )
    section.add_argument(
        "--step",
        type=float,
        metavar="UM",
        help="distance between the parallel sections (µm; default the thickness or the pixel size)",
    )
    section.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        metavar="UM",
        help="voxel size (z y x µm) for a volume whose file has none",
    )
    section.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    section.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="IMAGE",
        help="image to write (.tif, .zarr, .h5, .nii.gz ...)",
    )
    section.set_defaults(func=_section)

    match = actions.add_parser(
        "match",
        help="find the plane and in-plane transform that a real SECTION shows in VOLUME",
        description="Coarse-to-fine search (global over orientations and offsets on binned data, then local refinement) "
        "scored by normalised mutual information. Writes DIR/match.json (plane, transform, score, landscape, next-best "
        "candidates), DIR/virtual_section.tif, DIR/section_on_virtual.tif, DIR/overlay.png.",
    )
    match.add_argument("volume", metavar="VOLUME", help="grey 3D volume with its voxel size")
    match.add_argument(
        "section",
        metavar="SECTION",
        help="section image (RGB or grey; TIFF, OME-TIFF, SVS::LEVEL, PNG, JPEG, ...)",
    )
    match.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder (replaced as a whole on success)",
    )
    match.add_argument(
        "--axis",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="cutting axis: search a cone around it (default: all orientations)",
    )
    match.add_argument(
        "--cone",
        type=float,
        default=30.0,
        metavar="DEG",
        help="half-angle of the cone around --axis (default 30)",
    )
    match.add_argument(
        "--step",
        type=float,
        default=5.0,
        metavar="DEG",
        help="orientation grid step of the global search (default 5)",
    )
    match.add_argument(
        "--channel",
        metavar="STAINS:I",
        help="score a stain channel (e.g. hed:0 hematoxylin) instead of luminance",
    )
    match.add_argument(
        "--candidates",
        type=int,
        default=3,
        metavar="N",
        help="distinct candidates reported (default 3; at least 6 are refined)",
    )
    match.add_argument(
        "--pixel-size",
        type=float,
        metavar="UM",
        help="pixel size of SECTION for an image whose file has none",
    )
    match.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        metavar="UM",
        help="voxel size (z y x µm) for a volume whose file has none",
    )
    match.add_argument(
        "--register",
        choices=("convexadam", "bspline", "none"),
        default="convexadam",
        help="2D deformable registration of the section onto its virtual section (default convexadam; "
        "bspline: SimpleITK B-spline, the fallback; none: the similarity transform only)",
    )
    _transfer_options(match)
    match.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    match.set_defaults(func=_match)

    transfer = actions.add_parser(
        "transfer",
        help="transfer labels between a matched section and its volume (both ways)",
        description="With the result folder of 'mdlma histology match' (match.json and field.mha): draw a volume "
        "segmentation on the section (--volume-labels) and/or map section annotations into the volume "
        "(--section-labels). Writes into --out (default: the match folder).",
    )
    transfer.add_argument(
        "match", type=Path, metavar="MATCH_DIR", help="folder written by 'mdlma histology match'"
    )
    transfer.add_argument(
        "--volume",
        metavar="VOLUME",
        help="the volume (default: the one named in match.json); gives the voxel grid of --section-labels",
    )
    transfer.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        metavar="UM",
        help="voxel size (z y x µm) for a volume whose file has none",
    )
    _transfer_options(transfer)
    transfer.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (default MATCH_DIR)"
    )
    transfer.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    transfer.set_defaults(func=_transfer)


def _transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--volume-labels",
        metavar="LABELS",
        help="integer label volume on the volume's grid (e.g. a SUN segmentation): drawn on the section "
        "(labels_on_section.tif in section pixels, labels_overlay.png, labels_on_virtual.tif)",
    )
    parser.add_argument(
        "--section-labels",
        metavar="FILE",
        help="section annotations: an integer label image in section pixels, or JSON polygons "
        "[{label, points: [[x, y], ...]}] (GeoJSON-like features too): mapped into the volume (section_points.csv)",
    )
    parser.add_argument(
        "--sparse-volume",
        action="store_true",
        help="with --section-labels: also write section_labels_volume.zarr (the labels at their nearest voxels)",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=1,
        metavar="N",
        help="with --section-labels: map every N-th annotated pixel along rows and columns (default 1: all)",
    )


def _spacing(
    given: list[float] | None, volume: Any, name: str, what: str, option: str
) -> tuple[float, ...]:
    """The file's voxel size, or ``given``; refuse a file without one (``Volume.spacing_known``)."""
    read = volume.spacing
    n = len(read)
    if given:
        if len(given) not in (1, n) or not all(math.isfinite(g) and g > 0 for g in given):
            raise InputError(f"{option}: {given}; expected 1 or {n} positive numbers (µm)")
        return tuple(given) * (n if len(given) == 1 else 1)
    if not volume.spacing_known:
        raise InputError(
            f"{name}: the file gives no {what} (read as 1 µm); expected one in the file, or give it with {option}"
        )
    return read


def _read_volume(path: str, voxel_size: list[float] | None) -> Any:
    from ..io import read_volume

    volume = read_volume(path, lazy=True, expect_ndim=3, grey=True)
    volume.spacing = _spacing(voxel_size, volume, path, "voxel size", "--voxel-size")
    return volume


def _section(args: argparse.Namespace) -> int:
    from ..histology import Plane, virtual_section, virtual_stack, volume_centre
    from ..io import write_volume

    volume = _read_volume(args.volume, args.voxel_size)
    centre = volume_centre(volume)
    if args.angles is not None:
        if args.point is not None:
            raise InputError("--point: goes with --normal; with --angles give --offset")
        plane = Plane.from_angles(args.angles[0], args.angles[1], args.offset, centre, args.axis)
    else:
        if args.offset:
            raise InputError("--offset: goes with --angles; with --normal give --point")
        plane = Plane(centre if args.point is None else args.point, args.normal)
    pixel = args.pixel_size or min(volume.spacing)
    if args.count > 1:
        step = args.step or args.thickness or pixel
        image = virtual_stack(
            volume, plane, pixel, args.count, step, args.shape, args.thickness, device=args.device
        )
    else:
        image = virtual_section(
            volume, plane, pixel, args.shape, args.thickness, device=args.device
        )
    write_volume(args.out, image)
    print(f"wrote {args.out} {image.shape} float32, pixel size {pixel:g} um")
    print(
        f"plane: point {[round(float(p), 3) for p in plane.point]} um, normal {[round(float(n), 6) for n in plane.normal]} (world z y x)"
    )
    return 0


def _match(args: argparse.Namespace) -> int:
    from ..histology.match import locate_section
    from ..io import read_volume
    from ..utils.atomic import atomic_path

    volume = _read_volume(args.volume, args.voxel_size)
    section = read_volume(args.section, expect_ndim=2)
    section.spacing = _spacing(
        [args.pixel_size] if args.pixel_size else None,
        section,
        args.section,
        "pixel size",
        "--pixel-size",
    )
    print(
        f"searching {'a ' + format(args.cone, 'g') + ' degree cone' if args.axis else 'all orientations'} ...",
        flush=True,
    )
    result = locate_section(
        volume,
        section,
        axis=args.axis,
        cone=args.cone,
        orientation_step=args.step,
        channel=args.channel,
        candidates=args.candidates,
        device=args.device,
        progress=True,
    )
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        registration = _write_match(tmp, volume, section, result, args)
    best = result.best.to_dict(result.axis)
    print(
        f"best: tilt {best['tilt_deg']:.2f} deg, azimuth {best['azimuth_deg']:.2f} deg, offset {best['offset_um']:.2f} um, "
        f"rotation {best['section_to_plane']['rotation_deg']:.2f} deg, scale {best['section_to_plane']['scale']:.3f}, NMI {best['score_nmi']:.4f}"
    )
    for k, other in enumerate(result.candidates, 2):
        d = other.to_dict(result.axis)
        print(
            f"  #{k}: tilt {d['tilt_deg']:.2f} deg, azimuth {d['azimuth_deg']:.2f} deg, offset {d['offset_um']:.2f} um, NMI {d['score_nmi']:.4f}"
        )
    if registration is not None:
        from ..registration.quality import quality_rows

        print(f"deformable registration ({args.register}, {registration.seconds:.1f} s):")
        for name, before, after in quality_rows(registration.quality):
            print(f"  {name:30s} {before:>12s} {after:>12s}")
    written = sorted(p.name for p in args.out.iterdir())
    print(f"wrote {args.out}/: {', '.join(written)}")
    return 0


def _write_match(
    folder: Path, volume: Any, section: Any, result: Any, args: argparse.Namespace
) -> Any:
    """Write the report, the virtual section, the section mapped and warped onto it, overlays and labels.

    Returns the :class:`~unified_framework.histology.register.SectionRegistration` (None
    with ``--register none``).
    """
    import numpy as np

    from .. import __version__
    from ..histology.register import register_match, warp2d
    from ..io import Volume, write_volume
    from ..registration.fields import save_field

    best = result.best
    pixel = float(min(section.spacing))
    done = register_match(volume, section, best, args.register, device=args.device)
    virtual, mapped, section_map = done.virtual, done.mapped, done.section_map
    shape = section_map.virtual_shape
    data = np.asarray(section.data)
    colour = section.axes == "yxc"
    as_image = lambda a: Volume(  # noqa: E731
        (np.clip(np.rint(a), 0, 255).astype(np.uint8) if data.dtype == np.uint8 else a)
        if colour
        else (a[..., 0].astype(data.dtype) if data.dtype == np.uint8 else a[..., 0]),
        (pixel, pixel),
        axes="yxc" if colour else "",
    )
    mapped_volume = as_image(mapped)
    report = result.to_dict()
    fixed = np.asarray(virtual.data, dtype=np.float32)
    registration = done.registration
    outputs = {
        "virtual_section.tif": "the best plane of the volume at the section's pixel size, centred on plane.point",
        "section_on_virtual.tif": "the section mapped onto the virtual section by the similarity transform",
        "overlay.png": "virtual section magenta, registered section (stain darkness) green",
    }
    if registration is not None:
        field = registration.field
        warped = warp2d(mapped, field, pixel)
        write_volume(folder / "section_warped.tif", as_image(warped))
        save_field(folder / "field.mha", _slab_field(field), (pixel, pixel, pixel))
        quality = {
            "method": registration.method,
            "params": registration.params,
            "seconds": registration.seconds,
            "fixed": "virtual_section.tif",
            "moving": "section_on_virtual.tif (stain darkness)",
            **registration.quality,
        }
        (folder / "registration.json").write_text(json.dumps(quality, indent=2), encoding="utf-8")
        report["registration"] = quality
        shown = registration.warped
        outputs |= {
            "section_warped.tif": "the section after the deformable registration, on the virtual section's grid",
            "field.mha": "2D displacement field (µm) on the virtual section's grid, as a one-slice ITK field (z component 0): "
            "warped(p) = section_on_virtual(p + u(p))",
            "registration.json": "method and quality: folding (det J <= 0), NCC and MI before/after",
        }
    else:
        shown = done.darkness
    _overlay(folder / "overlay.png", fixed, shown)
    report["section"] = {
        "path": str(section.path),
        "shape": list(section.shape),
        "pixel_size_um": pixel,
    }
    report["volume"] = {
        "path": str(volume.path),
        "shape": list(volume.shape),
        "spacing_um": list(volume.spacing),
    }
    report["virtual_section"] = {"shape": list(shape), "pixel_size_um": pixel}
    report["outputs"] = outputs
    report["version"] = __version__
    (folder / "match.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_volume(folder / "virtual_section.tif", virtual)
    write_volume(folder / "section_on_virtual.tif", mapped_volume)
    _write_transfer(folder, report, section_map, volume, section, args)
    (folder / "match.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return registration


def _slab_field(field: Any) -> Any:
    from ..histology.register import slab

    return slab(field, 1)


def _overlay(path: Path, fixed: Any, moving: Any) -> None:
    """Virtual section magenta, section green: agreement looks white/grey."""
    import numpy as np
    from PIL import Image

    def scaled(a: Any) -> Any:
        lo, hi = np.percentile(a, [1, 99])
        return np.clip((np.asarray(a, np.float32) - lo) / max(hi - lo, 1e-9), 0, 1)

    v, s = scaled(fixed), scaled(moving)
    Image.fromarray((np.stack([v, s, v], axis=-1) * 255).astype(np.uint8)).save(path)


def _write_transfer(
    folder: Path,
    report: dict[str, Any],
    section_map: Any,
    volume: Any,
    section: Any,
    args: argparse.Namespace,
) -> None:
    """Label transfer both ways (--volume-labels, --section-labels) into ``folder``; notes in ``report``."""
    import numpy as np
    from PIL import Image

    from ..histology.sampling import sample_points, section_grid
    from ..histology.transfer import (
        label_overlay,
        labels_on_section,
        points_csv,
        read_annotations,
        section_points,
        sparse_label_volume,
    )
    from ..io import Volume, read_volume, write_volume

    transfer: dict[str, Any] = {}
    if args.volume_labels:
        labels = read_volume(args.volume_labels, lazy=True, expect_ndim=3)
        if tuple(labels.shape) != tuple(volume.shape):
            raise InputError(
                f"{args.volume_labels}: shape {tuple(labels.shape)}; expected the volume's {tuple(volume.shape)} (labels on its grid)"
            )
        # Labels on the volume's grid share its geometry (their file often has no voxel size).
        labels = Volume(
            labels.data, volume.spacing, {}, labels.path, volume.origin, volume.direction
        )
        on_section = labels_on_section(labels, section_map, device=args.device)
        write_volume(
            folder / "labels_on_section.tif", Volume(on_section, tuple(section.spacing[:2]))
        )
        plane_pts = section_grid(
            section_map.plane, section_map.virtual_pixel, section_map.virtual_shape
        )
        on_virtual, inside = sample_points(labels, plane_pts, order=0, device=args.device)
        write_volume(
            folder / "labels_on_virtual.tif",
            Volume(
                np.where(inside[0], np.rint(on_virtual[0]), 0).astype(on_section.dtype),
                (section_map.virtual_pixel,) * 2,
            ),
        )
        Image.fromarray(label_overlay(np.asarray(section.data), on_section)).save(
            folder / "labels_overlay.png"
        )
        counts = np.bincount(on_section.ravel().astype(np.int64))
        transfer["volume_labels"] = {
            "path": str(args.volume_labels),
            "pixels_per_label": {str(k): int(c) for k, c in enumerate(counts) if c and k},
            "outputs": ["labels_on_section.tif", "labels_on_virtual.tif", "labels_overlay.png"],
        }
    if args.section_labels:
        annotations = read_annotations(args.section_labels, section.spatial_shape)
        points = section_points(annotations, section_map, volume, stride=args.stride)
        (folder / "section_points.csv").write_text(points_csv(points), encoding="utf-8")
        summary = {}
        for label in np.unique(points["label"]):
            pick = points["label"] == label
            summary[str(int(label))] = {
                "pixels": int(pick.sum()),
                "inside_volume": int(points["inside"][pick].sum()),
                "centroid_world_um": points["world_um"][pick].mean(0).round(3).tolist(),
                "centroid_voxel": points["voxel"][pick].mean(0).round(3).tolist(),
            }
        transfer["section_labels"] = {
            "path": str(args.section_labels),
            "per_label": summary,
            "outputs": ["section_points.csv"],
        }
        if args.sparse_volume:
            sparse = sparse_label_volume(points, volume.shape)
            write_volume(
                folder / "section_labels_volume.zarr",
                Volume(sparse, volume.spacing, {}, None, volume.origin, volume.direction),
            )
            transfer["section_labels"]["outputs"].append("section_labels_volume.zarr")
    if transfer:
        report["transfer"] = transfer


def _next_to(path: str, folder: Path) -> str:
    """A path from a report: as written when it exists from here, else relative to the result's parent folder."""
    if Path(path).is_absolute() or Path(path).exists():
        return path
    beside = folder.parent / path
    return str(beside) if beside.exists() else path


def _transfer(args: argparse.Namespace) -> int:
    import numpy as np

    from ..histology.transfer import SectionMap
    from ..io import read_volume
    from ..registration.fields import load_field

    if not args.volume_labels and not args.section_labels:
        raise InputError("transfer: nothing to do; give --volume-labels and/or --section-labels")
    report_path = args.match / "match.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        best = report["best"]
        section_path = report["section"]["path"]
        virtual = report["virtual_section"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"{report_path}: not a match report of 'mdlma histology match' ({exc})"
        ) from None
    volume = _read_volume(
        args.volume or _next_to(report["volume"]["path"], args.match),
        args.voxel_size or report["volume"]["spacing_um"],
    )
    section = read_volume(_next_to(section_path, args.match), expect_ndim=2)
    field = None
    if (args.match / "field.mha").is_file():
        field = np.asarray(load_field(args.match / "field.mha")[0])[1:, 0]
    section_map = SectionMap.from_match(
        best,
        section.spatial_shape,
        (report["section"]["pixel_size_um"],) * 2,
        virtual["shape"],
        virtual["pixel_size_um"],
        field,
    )
    out = args.out or args.match
    out.mkdir(parents=True, exist_ok=True)
    notes: dict[str, Any] = {}
    # Everything is made in a scratch folder first and moved in at the end: a failure
    # (bad annotations, labels on another grid) leaves the folder as it was.
    with tempfile.TemporaryDirectory(dir=out, prefix=".transfer-") as scratch:
        tmp = Path(scratch)
        _write_transfer(tmp, notes, section_map, volume, section, args)
        (tmp / "transfer.json").write_text(
            json.dumps(notes.get("transfer", {}), indent=2), encoding="utf-8"
        )
        for item in tmp.iterdir():
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    for direction, info in notes.get("transfer", {}).items():
        print(f"{direction}: wrote {', '.join(info['outputs'])} into {out}")
    return 0
