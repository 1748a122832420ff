"""``mdlma model``: standard model packages (bioimage.io): export, import, validate.

Examples
--------
``mdlma model export model.pt --out model.bioimageio.zip`` (SUN, HRNet/U-Net, nnU-Net, Keras)
``mdlma model validate model.bioimageio.zip``
``mdlma model import downloaded.zip --out models/unet``
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "model",
        help="bioimage.io model packages: export any trained model, import and validate packages",
        description=(
            "Export trained models to the bioimage.io model format (rdf.yaml, TorchScript or Keras weights, "
            "test tensors, pre/post-processing) and validate packages with bioimageio.core's own checks, "
            "offline. See docs/inference.md."
        ),
    )
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION")
    actions.required = True
    e = actions.add_parser(
        "export",
        help="any trained model (SUN, HRNet/U-Net, nnU-Net, Keras) to a bioimage.io package",
        description=(
            "Write MODEL as a bioimage.io model package (spec 0.5; a folder, or a .zip) and test it with "
            "bioimageio.core.test_model. Kinds: SUN model packages and active-learning HRNet/U-Net files "
            "(.pt; TorchScript, 2D), nnU-Net model folders (mdlma nnunet import or a trained result "
            "folder; TorchScript, folds' logits averaged; 2d as a 2D model, 3d_fullres/3d_lowres as a 3D "
            "model), Keras .keras files with their .keras.json sidecar (Keras v3 weights). The "
            "normalisation becomes the package's pre-processing (nnU-Net: CTNormalization, "
            "ZScoreNormalization, NoNormalization; others are refused), the softmax its post-processing; "
            "the test output is this framework's own prediction of the test input."
        ),
    )
    e.add_argument(
        "model",
        type=Path,
        metavar="MODEL",
        help="SUN or active-learning .pt, nnU-Net model folder, or Keras .keras",
    )
    e.add_argument(
        "--out", type=Path, required=True, help="package folder or .zip (must not exist)"
    )
    e.add_argument("--name", help="model name (default: the file name)")
    e.add_argument("--author", action="append", help="an author (repeatable)")
    e.add_argument("--license", default="MIT", help="SPDX license id (default MIT)")
    e.add_argument(
        "--test-size",
        type=int,
        metavar="N",
        help="side of the test input (default: the model's training patch)",
    )
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
    from ..inference.bioimageio import export_model, validate_package

    out = export_model(
        args.model,
        args.out,
        name=args.name,
        authors=args.author,
        license=args.license,
        test_size=args.test_size,
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
