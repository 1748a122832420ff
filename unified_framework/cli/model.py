"""``mdlma model``: standard model packages (bioimage.io): export, import, validate.

Examples
--------
``mdlma model export model.pt --out model.bioimageio.zip``
``mdlma model validate model.bioimageio.zip``
``mdlma model import downloaded.zip --out models/unet``
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "model",
        help="bioimage.io model packages: export a SUN model, import and validate packages",
        description=(
            "Export trained models to the bioimage.io model format (rdf.yaml, TorchScript weights, test "
            "tensors, pre/post-processing) and validate packages with bioimageio.core's own checks, offline. "
            "See docs/inference.md."
        ),
    )
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION")
    actions.required = True
    e = actions.add_parser(
        "export", help="a SUN model (.pt) to a bioimage.io package (folder or .zip)"
    )
    e.add_argument("model", type=Path, metavar="MODEL", help="the SUN model package (.pt)")
    e.add_argument(
        "--out", type=Path, required=True, help="package folder or .zip (must not exist)"
    )
    e.add_argument("--name", help="model name (default: the file name)")
    e.add_argument("--author", action="append", help="an author (repeatable)")
    e.add_argument("--license", default="MIT", help="SPDX license id (default MIT)")
    e.add_argument(
        "--no-validate", action="store_true", help="skip the library's test of the new package"
    )
    e.set_defaults(func=_export)
    i = actions.add_parser(
        "import", help="validate a bioimage.io package and unpack it for 'mdlma infer'"
    )
    i.add_argument("package", type=Path, metavar="PACKAGE", help="rdf.yaml, its folder or a .zip")
    i.add_argument("--out", type=Path, required=True, help="folder to unpack into (must not exist)")
    i.set_defaults(func=_import)
    v = actions.add_parser(
        "validate", help="check a bioimage.io package (format, weights, test tensors)"
    )
    v.add_argument("package", type=Path, metavar="PACKAGE", help="rdf.yaml, its folder or a .zip")
    v.add_argument("--format-only", action="store_true", help="check the format only, run nothing")
    v.set_defaults(func=_validate)


def _export(args: argparse.Namespace) -> int:
    from ..inference.bioimageio import export_sun, validate_package

    out = export_sun(
        args.model, args.out, name=args.name, authors=args.author, license=args.license
    )
    print(f"wrote {out}")
    if not args.no_validate:
        summary = validate_package(out)
        print(f"bioimageio.core test_model: {summary.status}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..inference.bioimageio import import_package

    out = import_package(args.package, args.out)
    print(f"validated and unpacked to {out}; use it with: mdlma infer {out} IMAGE --out OUT")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ..inference.bioimageio import validate_package

    summary = validate_package(args.package, run_test=not args.format_only)
    print(f"{args.package}: {summary.status}")
    for detail in summary.details:
        print(f"  {detail.status:7} {detail.name}")
    return 0
