"""``mdlma io``: inspect and convert images and volumes between file formats."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..errors import InputError
from ..utils.text import printable

FORMATS = ("tiff", "tiff-folder", "hdf5", "nifti", "dicom", "zarr")  # = unified_framework.io.SUPPORTED_FORMATS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "io",
        help="inspect and convert volumes (TIFF, HDF5/NeXus, NIfTI, DICOM, Zarr)",
        description="Inspect and convert 2D images and 3D volumes. Volumes are read lazily and written "
        "slab by slab, so inputs larger than memory work. PATH may name a dataset as FILE.h5::/entry/data/data.",
    )
    actions = parser.add_subparsers(dest="io_action", metavar="ACTION")
    actions.required = True

    convert = actions.add_parser(
        "convert",
        help="convert IN to OUT (format from the suffix of OUT)",
        description="Convert between any two formats: .tif/.tiff (multi-page TIFF), a folder without suffix "
        "(TIFF slices), .h5/.hdf5/.nxs (HDF5, NeXus layout), .nii/.nii.gz, .zarr, .dcm (one 2D DICOM file); "
        "--format dicom writes a DICOM series folder. Voxel size is carried over.",
    )
    convert.add_argument("input", metavar="IN", help="input file or folder (FILE.h5::/dataset allowed)")
    convert.add_argument("output", metavar="OUT", help="output file or folder (replaced if it exists)")
    convert.add_argument("--dataset", metavar="PATH", help="dataset to read inside an HDF5 file or Zarr group")
    convert.add_argument("--out-dataset", metavar="PATH", help="dataset to write in HDF5 (default /entry/data/data) or Zarr")
    convert.add_argument("--chunks", type=int, metavar="N", help="chunk edge length for HDF5/Zarr output (default 64)")
    convert.add_argument("--dtype", metavar="DTYPE", help="cast to this type (e.g. uint16); values that do not fit are refused")
    convert.add_argument("--format", choices=FORMATS, help="output format when the suffix does not say (dicom: series folder)")
    convert.add_argument("--spacing", type=float, nargs="+", metavar="UM", help="override the voxel size (micrometres, z y x)")
    convert.set_defaults(func=_convert)

    info = actions.add_parser("info", help="print format, shape, dtype, voxel size, value range and metadata")
    info.add_argument("path", metavar="PATH", help="file or folder (FILE.h5::/dataset allowed)")
    info.add_argument("--dataset", metavar="PATH", help="dataset inside an HDF5 file or Zarr group")
    info.add_argument("--no-range", action="store_true", help="skip the value range (which reads all data once)")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=_info)


def _convert(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_volume, write_volume

    dtype = None
    if args.dtype:
        try:
            dtype = np.dtype(args.dtype)
        except TypeError:
            raise InputError(f"--dtype {args.dtype!r} is not a numpy data type; expected e.g. uint8, uint16, float32") from None
    volume = read_volume(args.input, args.dataset, lazy=True)
    out = write_volume(
        args.output, volume, spacing=args.spacing, dataset=args.out_dataset, chunks=args.chunks, dtype=dtype, format=args.format
    )
    shape = "x".join(map(str, volume.shape))
    spacing = " x ".join(f"{s:g}" for s in (args.spacing or volume.spacing))
    print(f"wrote {printable(out)}: {shape} {dtype or volume.dtype}, voxel size {spacing} um")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..io import read_volume, value_range

    volume = read_volume(args.path, args.dataset, lazy=True)
    report: dict[str, Any] = {
        "path": str(volume.path),
        "format": volume.metadata.get("format"),
        "shape": list(volume.shape),
        "dtype": str(volume.dtype),
        "spacing_um": list(volume.spacing),
    }
    if not args.no_range:
        lo, hi, bad = value_range(volume.data, desc="scanning values")
        report.update({"min": None if math.isnan(lo) else lo, "max": None if math.isnan(hi) else hi, "non_finite": bad})
    report["metadata"] = {k: v for k, v in volume.metadata.items() if k not in ("format", "dtype", "shape")}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"path        {printable(report['path'])}")
    print(f"format      {report['format']}")
    print(f"shape       {' x '.join(map(str, volume.shape))}  ({'z, y, x' if volume.ndim == 3 else 'y, x'})")
    print(f"dtype       {report['dtype']}")
    print(f"voxel size  {' x '.join(f'{s:g}' for s in volume.spacing)} um")
    if "min" in report:
        print(f"range       {report['min']:g} .. {report['max']:g}" if report["min"] is not None else "range       (no finite values)")
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
