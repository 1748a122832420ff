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
    match.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    match.set_defaults(func=_match)


def _spacing(
    given: list[float] | None, read: tuple[float, ...], name: str, what: str, option: str
) -> tuple[float, ...]:
    """The file's voxel size, or ``given``; refuse a file without one (readers then report 1 µm everywhere)."""
    n = len(read)
    if given:
        if len(given) not in (1, n) or not all(math.isfinite(g) and g > 0 for g in given):
            raise InputError(f"{option}: {given}; expected 1 or {n} positive numbers (µm)")
        return tuple(given) * (n if len(given) == 1 else 1)
    if all(s == 1.0 for s in read):
        raise InputError(
            f"{name}: the file gives no {what} (read as 1 µm); expected one in the file, or give it with {option}"
        )
    return read


def _read_volume(path: str, voxel_size: list[float] | None) -> Any:
    from ..io import read_volume

    volume = read_volume(path, lazy=True, expect_ndim=3, grey=True)
    volume.spacing = _spacing(voxel_size, volume.spacing, path, "voxel size", "--voxel-size")
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
        section.spacing,
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
        _write_match(tmp, volume, section, result)
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
    print(f"wrote {args.out}/match.json, virtual_section.tif, section_on_virtual.tif, overlay.png")
    return 0


def _write_match(folder: Path, volume: Any, section: Any, result: Any) -> None:
    """Write the report, the virtual section, the section mapped onto it and an overlay into ``folder``."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    from ..histology import virtual_section
    from ..histology.match import section_grey
    from ..histology.sampling import default_shape
    from ..io import Volume, write_volume

    best = result.best
    pixel = float(min(section.spacing))
    virtual = virtual_section(volume, best.plane, pixel, default_shape(volume, best.plane, pixel))
    h, w = virtual.shape
    # Inverse similarity: plane point q (µm from the plane point) -> section pixel.
    qv, qu = np.meshgrid(
        (np.arange(h) - (h - 1) / 2) * pixel, (np.arange(w) - (w - 1) / 2) * pixel, indexing="ij"
    )
    a = math.radians(best.rotation_deg)
    dv, du = qv - best.translation_um[0], qu - best.translation_um[1]
    pv = (math.cos(a) * dv + math.sin(a) * du) / best.scale
    pu = (-math.sin(a) * dv + math.cos(a) * du) / best.scale
    sh, sw = section.spatial_shape
    rows = pv / section.spacing[0] + (sh - 1) / 2
    cols = pu / section.spacing[1] + (sw - 1) / 2
    data = np.asarray(section.data)
    channels = [data[..., c] for c in range(data.shape[-1])] if section.axes == "yxc" else [data]
    fill = 255 if data.dtype == np.uint8 else 0
    mapped = np.stack(
        [
            ndimage.map_coordinates(ch.astype(np.float32), [rows, cols], order=1, cval=fill)
            for ch in channels
        ],
        axis=-1,
    )
    mapped = mapped.astype(data.dtype) if data.dtype == np.uint8 else mapped
    mapped_volume = Volume(
        mapped if section.axes == "yxc" else mapped[..., 0],
        (pixel, pixel),
        axes="yxc" if section.axes == "yxc" else "",
    )
    # Deformable 2D registration of the mapped section onto the virtual one and label transfer
    # (issue 17, items 3-4) plug in here once unified_framework.registration exists: they start
    # from `mapped_volume` on the grid of `virtual`.
    write_volume(folder / "virtual_section.tif", virtual)
    write_volume(folder / "section_on_virtual.tif", mapped_volume)
    grey = section_grey(mapped_volume)
    v = np.asarray(virtual.data, dtype=np.float32)
    lo, hi = np.percentile(v, [1, 99])
    v = np.clip((v - lo) / max(hi - lo, 1e-9), 0, 1)
    s = 1 - np.clip(grey / max(float(grey.max()), 1e-9), 0, 1)  # stained tissue bright
    overlay = np.stack(
        [v, s, v], axis=-1
    )  # virtual section magenta, section green: agreement looks white/grey
    Image.fromarray((overlay * 255).astype(np.uint8)).save(folder / "overlay.png")
    report = result.to_dict()
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
    report["outputs"] = {
        "virtual_section.tif": "the best plane of the volume at the section's pixel size, centred on plane.point",
        "section_on_virtual.tif": "the section mapped onto the virtual section by the similarity transform (no deformable step yet)",
        "overlay.png": "virtual section magenta, section (stain darkness) green",
    }
    (folder / "match.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
