"""``mdlma denoise METHOD IN --out OUT --param k=v``: denoising and ring removal of volumes.

Examples
--------
``mdlma denoise gaussian scan.zarr --out smooth.zarr --param sigma=1.5``
``mdlma denoise nl-means scan.tif --out nlm.tif --param h=0.04 --param patch_distance=4``
``mdlma denoise list``
"""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..utils.text import printable


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``["sigma=2", "h=0.1"]`` -> ``{"sigma": "2", "h": "0.1"}`` (values converted later)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param: expected NAME=VALUE, got {item!r}", field="param")
        out[key.strip()] = value.strip()
    return out


def register(subparsers) -> None:
    from ..denoise import METHODS

    lines = []
    for m in METHODS.values():
        params = ", ".join(f"{k}={p.default!r} ({p.help})" for k, p in m.params.items())
        lines.append(f"{m.name}: {m.summary}; {params}")
    parser = subparsers.add_parser(
        "denoise",
        help="denoise a volume (Gaussian, median, bilateral, NL-means, TV, wavelet, BM3D, rings)",
        description="Filter a 2D image or 3D volume chunk by chunk (Zarr/HDF5 inputs stay out of core). "
        "Methods and parameters: " + " | ".join(lines),
    )
    parser.add_argument("method", choices=[*METHODS, "list"], help="the method ('list': show them)")
    parser.add_argument("input", nargs="?", help="volume to filter (any format mdlma reads)")
    parser.add_argument(
        "-o", "--out", help="filtered volume to write (float32; format from the suffix)"
    )
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        metavar="NAME=VALUE",
        help="a method parameter (repeatable), e.g. --param sigma=1.5",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=None,
        help="cubic chunk edge in voxels (default: whole-plane slabs with the method's halo, "
        "sized to the memory and the cores)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..denoise import METHODS, denoise_file

    if args.method == "list":
        for m in METHODS.values():
            print(f"{m.name:10s} {m.summary}{'' if m.exact else ' [chunked: approximate]'}")
            for key, p in m.params.items():
                print(f"    {key}={p.default!r}: {p.help}")
        return 0
    if not args.input or not args.out:
        raise InputError("denoise: give the input volume and --out OUT")
    if args.chunks is not None and args.chunks < 1:
        raise InputError(f"--chunks: expected a positive edge, got {args.chunks}", field="chunks")
    from tqdm import tqdm

    with tqdm(total=1, desc=f"denoise {args.method}", disable=None) as bar:
        result = denoise_file(
            args.input, args.out, args.method, parse_params(args.param), chunks=args.chunks
        )
        bar.update()
    values = ", ".join(f"{k}={v}" for k, v in result["params"].items())
    print(
        f"{args.method}: wrote {printable(args.out)} {tuple(result['shape'])} ({values}; halo {tuple(result['halo'])})"
    )
    return 0
