"""``mdlma compare``: every segmentation method on the same data, one table.

Examples
--------
``mdlma compare --train a.tif a_gt.tif --train b.tif b_gt.tif --test c.tif c_gt.tif --methods sun-9 sun-3 nnunet-2d nnunet-2d-9axes nnunet-3d classical --out cmp/``
``mdlma compare --train ... --test ... --methods nnunet-3d --model nnunet-3d=models/implant-3d --out cmp/``
``mdlma compare --train a.tif a_gt.tif b.tif b_gt.tif --test ... --methods sun-9 sun-3 classical --method-index 1 --out cmp/``   (SLURM array task 1: sun-3)
``mdlma compare --merge-only --out cmp/``   (the merge job)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from ..compare import METHODS

    parser = subparsers.add_parser(
        "compare",
        help="train/predict/score several segmentation methods on the same data; one table",
        description=(
            "Methods: "
            + ", ".join(METHODS)
            + ". Writes OUT/comparison.{json,csv,png} (per-class Dice, HD95, ASSD, "
            "predicted/true volume, train and predict time, peak RSS, GPU memory)."
        ),
    )
    parser.add_argument(
        "--train",
        nargs="+",
        action="extend",
        default=[],
        metavar="IMAGE LABELS",
        help="training image and label volumes in turn (repeat --train or list several pairs)",
    )
    parser.add_argument(
        "--test",
        nargs="+",
        action="extend",
        default=[],
        metavar="IMAGE LABELS",
        help="held-out image and label volumes in turn, the same for every method",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), metavar="METHOD")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--model", action="append", default=[], metavar="METHOD=PATH", help="a trained model to use"
    )
    parser.add_argument("--sun-steps", type=int, default=300)
    parser.add_argument("--sun-input-size", type=int, default=64)
    parser.add_argument("--nnunet-epochs", type=int, default=1)
    parser.add_argument("--nnunet-iterations", type=int, default=20)
    parser.add_argument("--nnunet-dataset-id", type=int, default=990)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--method-index",
        type=int,
        metavar="I",
        help="run only the I-th of --methods (0-based; one SLURM array task) and do not merge",
    )
    parser.add_argument(
        "--no-nnunet-final-validation",
        dest="nnunet_final_validation",
        action="store_false",
        help="skip nnU-Net's validation pass after training (it re-predicts the training cases)",
    )
    parser.add_argument("--no-merge", action="store_true", help="only run the methods")
    parser.add_argument("--merge-only", action="store_true", help="only merge methods/*.json")
    parser.set_defaults(func=_compare)


def _pairs(flat: list[str], option: str) -> list[tuple[str, str]]:
    from ..errors import InputError

    if len(flat) % 2:
        raise InputError(
            f"--{option}: expected IMAGE LABELS pairs, got {len(flat)} paths", field=option
        )
    return list(zip(flat[0::2], flat[1::2], strict=True))


def _compare(args: argparse.Namespace) -> int:
    from ..compare import METHODS, Budget, merge, run_method
    from ..errors import InputError

    methods = list(args.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown and not args.merge_only:
        raise InputError(
            f"--methods {unknown}: expected some of {', '.join(METHODS)}", field="methods"
        )
    if args.method_index is not None:
        if not 0 <= args.method_index < len(methods):
            raise InputError(
                f"--method-index {args.method_index}: expected 0 .. {len(methods) - 1} "
                f"({len(methods)} methods)",
                field="method_index",
            )
        args.no_merge = True
    if not args.merge_only:
        models = {}
        for item in args.model:
            method, sep, path = item.partition("=")
            if not sep:
                raise InputError(f"--model {item!r}: expected METHOD=PATH", field="model")
            models[method] = path
        budget = Budget(
            sun_steps=args.sun_steps,
            sun_input_size=args.sun_input_size,
            nnunet_epochs=args.nnunet_epochs,
            nnunet_iterations=args.nnunet_iterations,
            nnunet_dataset_id=args.nnunet_dataset_id,
            nnunet_final_validation=args.nnunet_final_validation,
            device=args.device,
            threads=args.threads,
        )
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        train, test = _pairs(args.train, "train"), _pairs(args.test, "test")
        chosen = methods if args.method_index is None else [methods[args.method_index]]
        for method in chosen:
            result = run_method(method, train, test, args.out, budget, models.get(method), methods)
            dice = [r["dice"] for r in result["rows"]]
            print(
                f"{method}: mean Dice {sum(dice) / max(len(dice), 1):.3f}, train {result['train_seconds']} s, "
                f"predict {result['predict_seconds']} s"
            )
    if not args.no_merge:
        for path in merge(args.out).values():
            print(f"wrote {path}")
    return 0
