"""``mdlma io``: inspect and convert images and volumes between file formats."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..errors import InputError
from ..utils.text import printable

FORMATS = (
    "tiff",
    "tiff-folder",
    "hdf5",
    "nifti",
    "dicom",
    "zarr",
)  # the writable unified_framework.io.SUPPORTED_FORMATS
# = unified_framework.image.STAINS (not imported here: `mdlma --help` stays fast without scikit-image)
STAINS_NAMES = ("hed", "hdx", "fgx", "bex", "rbd", "gdx", "hax", "bro", "bpx", "ahx", "hpx")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "io",
        help="inspect and convert volumes and images (TIFF/OME-TIFF/SVS, HDF5/NeXus, NIfTI, DICOM, Zarr, PNG, JPEG)",
        description="Inspect and convert 2D images and 3D volumes. Volumes are read lazily and written "
        "slab by slab, so inputs larger than memory work. PATH may name a dataset as FILE.h5::/entry/data/data "
        "or a pyramid level as SLIDE.svs::2. Colour images are (y, x, c).",
    )
    actions = parser.add_subparsers(dest="io_action", metavar="ACTION")
    actions.required = True

    convert = actions.add_parser(
        "convert",
        help="convert IN to OUT (format from the suffix of OUT)",
        description="Convert between any two formats: .tif/.tiff (multi-page TIFF), a folder without suffix "
        "(TIFF slices), .h5/.hdf5/.nxs (HDF5, NeXus layout), .nii/.nii.gz, .zarr, .dcm (one 2D DICOM file); "
        "--format dicom writes a DICOM series folder. Voxel size is carried over. Colour/multi-channel images "
        "(PNG, JPEG, TIFF, OME-TIFF, SVS) keep their channels in .tif, .ome.tif and .zarr; --grey, --channel or "
        "--stains turn them into grey values or stain densities first.",
    )
    convert.add_argument(
        "input", metavar="IN", help="input file or folder (FILE.h5::/dataset allowed)"
    )
    convert.add_argument(
        "output", metavar="OUT", help="output file or folder (replaced if it exists)"
    )
    convert.add_argument(
        "--dataset", metavar="PATH", help="dataset to read inside an HDF5 file or Zarr group"
    )
    convert.add_argument(
        "--out-dataset",
        metavar="PATH",
        help="dataset to write in HDF5 (default /entry/data/data) or Zarr",
    )
    convert.add_argument(
        "--chunks",
        type=int,
        metavar="N",
        help="chunk edge length for HDF5/Zarr output (default 64)",
    )
    convert.add_argument(
        "--dtype",
        metavar="DTYPE",
        help="cast to this type (e.g. uint16); values that do not fit are refused",
    )
    convert.add_argument(
        "--format",
        choices=FORMATS,
        help="output format when the suffix does not say (dicom: series folder)",
    )
    convert.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="UM",
        help="override the voxel size (micrometres, z y x)",
    )
    convert.add_argument(
        "--level",
        type=_level,
        metavar="N",
        help="pyramid level of a TIFF/SVS or OME-Zarr input (0 = full resolution)",
    )
    colour = convert.add_mutually_exclusive_group()
    colour.add_argument(
        "--grey",
        "--gray",
        action="store_true",
        help="convert a colour image to its luminance (float32, 0..1)",
    )
    colour.add_argument(
        "--channel", type=int, metavar="C", help="keep channel C of a colour/multi-channel image"
    )
    colour.add_argument(
        "--stains",
        choices=sorted(STAINS_NAMES),
        metavar="SET",
        help="separate stains of an RGB bright-field image (e.g. hed: hematoxylin, eosin, DAB)",
    )
    convert.set_defaults(func=_convert)

    info = actions.add_parser(
        "info",
        help="print format, shape, dtype, voxel size, orientation, origin, value range and metadata",
    )
    info.add_argument("path", metavar="PATH", help="file or folder (FILE.h5::/dataset allowed)")
    info.add_argument("--dataset", metavar="PATH", help="dataset inside an HDF5 file or Zarr group")
    info.add_argument(
        "--level",
        type=_level,
        metavar="N",
        help="pyramid level of a TIFF/SVS or OME-Zarr (0 = full resolution)",
    )
    info.add_argument(
        "--no-range", action="store_true", help="skip the value range (which reads all data once)"
    )
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=_info)


def _level(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a pyramid level; expected 0, 1, 2, ...")
    return int(text)


def _convert(args: argparse.Namespace) -> int:
    import numpy as np

    from ..image import separate_stains, to_grey
    from ..io import read_volume, write_volume

    dtype = None
    if args.dtype:
        try:
            dtype = np.dtype(args.dtype)
        except TypeError:
            raise InputError(
                f"--dtype {args.dtype!r} is not a numpy data type; expected e.g. uint8, uint16, float32"
            ) from None
    volume = read_volume(args.input, args.dataset, lazy=True, level=args.level)
    if args.grey or args.channel is not None:
        volume = to_grey(volume, channel=args.channel)
    elif args.stains:
        volume = separate_stains(volume, args.stains)
    out = write_volume(
        args.output,
        volume,
        spacing=args.spacing,
        dataset=args.out_dataset,
        chunks=args.chunks,
        dtype=dtype,
        format=args.format,
    )
    shape = "x".join(map(str, volume.shape))
    spacing = " x ".join(f"{s:g}" for s in (args.spacing or volume.spacing))
    channels = f" ({', '.join(volume.axes)})" if "c" in volume.axes else ""
    print(
        f"wrote {printable(out)}: {shape}{channels} {dtype or volume.dtype}, voxel size {spacing} um"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..io import read_volume, value_range

    volume = read_volume(args.path, args.dataset, lazy=True, level=args.level)
    # The file's byte order: the data was converted to native order on reading.
    byte_order = volume.metadata.get("byte_order", "native")
    report: dict[str, Any] = {
        "path": str(volume.path),
        "format": volume.metadata.get("format"),
        "shape": list(volume.shape),
        "axes": volume.axes,
        "dtype": volume.dtype.name,
        "byte_order": byte_order,
        "spacing_um": list(volume.spacing),
        "orientation": volume.orientation,
        "origin_um": list(volume.origin),
        "direction": [list(row) for row in volume.direction],
    }
    if not args.no_range:
        lo, hi, bad = value_range(volume.data, desc="scanning values")
        report.update(
            {
                "min": None if math.isnan(lo) else lo,
                "max": None if math.isnan(hi) else hi,
                "non_finite": bad,
            }
        )
    hidden = ("format", "dtype", "shape", "byte_order", "levels", "level")
    report["metadata"] = {k: v for k, v in volume.metadata.items() if k not in hidden}
    if "levels" in volume.metadata:
        report["level"] = volume.metadata["level"]
        report["levels"] = volume.metadata["levels"]
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"path        {printable(report['path'])}")
    print(f"format      {report['format']}")
    print(f"shape       {' x '.join(map(str, volume.shape))}  ({', '.join(volume.axes)})")
    print(f"dtype       {report['dtype']}" + (f" ({byte_order})" if byte_order != "native" else ""))
    print(f"voxel size  {' x '.join(f'{s:g}' for s in volume.spacing)} um")
    for index, level in enumerate(report.get("levels", ())):
        mark = "  <- read" if index == report["level"] else ""
        pixel = " x ".join(f"{s:g}" for s in level["spacing_um"])
        print(
            f"{'levels' if index == 0 else '':<11} {index}: {' x '.join(map(str, level['shape']))}, pixel {pixel} um{mark}"
        )
    print(f"orientation {volume.orientation}  (where index axes x, y, z point: L/R, P/A, S/I)")
    z, y, x = volume.origin
    ras_mm = " ".join(f"{(v or 0.0) / 1000:g}" for v in (-x, -y, z))  # "or": no "-0"
    print(
        f"origin      {z:g} {y:g} {x:g} um  (centre of voxel 0: z y x in the LPS world; NIfTI RAS x y z {ras_mm} mm)"
    )
    if "min" in report:
        print(
            f"range       {report['min']:g} .. {report['max']:g}"
            if report["min"] is not None
            else "range       (no finite values)"
        )
        if report["non_finite"]:
            print(f"non-finite  {report['non_finite']} NaN/Inf values")
    for key, value in report["metadata"].items():
        print(printable(f"{key:<11} {_summary(value)}"))
    return 0


def _summary(value: Any, width: int = 100) -> str:
    """One line describing a metadata value; dicts list their keys."""
    if isinstance(value, dict):
        text = f"{len(value)} entries: " + ", ".join(map(str, value))
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."
