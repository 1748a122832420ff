"""``mdlma recon IN --out OUT --method fbp|sirt|sart|cgls``: reconstruction from projections.

Examples
--------
``mdlma sample projections proj.h5 --phantom truth.tif``
``mdlma recon proj.h5 --out slices.tif --method sart --iterations 20``
"""

from __future__ import annotations

import argparse

from ..utils.text import printable


def register(subparsers) -> None:
    from ..recon import METHODS, TOMOPY_ONLY

    parser = subparsers.add_parser(
        "recon",
        help="reconstruct slices from parallel-beam projections (FBP, SIRT, SART, CGLS; tomopy methods)",
        description="Reconstruct slices from a projection stack (angles, rows, detector) in HDF5/NeXus, TIFF or Zarr. "
        "Backends: tomopy when installed (conda environment), else astra-toolbox on the CPU. "
        f"Only with tomopy: {', '.join(TOMOPY_ONLY)}.",
    )
    parser.add_argument("input", help="projection stack (file.h5::/entry/data/data allowed)")
    parser.add_argument(
        "-o", "--out", required=True, help="slices to write (format from the suffix)"
    )
    parser.add_argument("--method", choices=METHODS, default="fbp", help="algorithm (default fbp)")
    parser.add_argument(
        "--iterations",
        type=int,
        default=100,
        help="iterations of an iterative method (default 100)",
    )
    parser.add_argument("--backend", choices=["auto", "tomopy", "astra"], default="auto")
    parser.add_argument(
        "--angles",
        type=float,
        nargs=2,
        metavar=("FIRST", "LAST"),
        default=None,
        help="projection angles in degrees, evenly from FIRST to LAST (exclusive); default: from the file, else 0 180",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..recon import reconstruct_file

    with tqdm(desc=f"recon {args.method}", unit="slice", disable=None) as bar:
        result = reconstruct_file(
            args.input,
            args.out,
            args.method,
            iterations=args.iterations,
            backend=args.backend,
            angles_deg=tuple(args.angles) if args.angles else None,
            progress=bar.update,
        )
    print(
        f"{args.method} ({result['backend']}): wrote {printable(args.out)} {tuple(result['shape'])} from {result['angles']} angles"
    )
    return 0
