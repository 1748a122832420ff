"""``mdlma compare``: every segmentation method on the same data, one table.

Examples
--------
``mdlma compare --train a.tif a_gt.tif --train b.tif b_gt.tif --test c.tif c_gt.tif --methods sun-9 sun-3 nnunet-2d nnunet-2d-9axes nnunet-3d classical --out cmp/``
``mdlma compare --train ... --test ... --methods nnunet-3d --model nnunet-3d=models/implant-3d --out cmp/``
``mdlma compare --train ... --test ... --methods sun-9 --out cmp/ --no-merge``   (one SLURM array task)
``mdlma compare --merge-only --out cmp/``
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
        "--train", nargs=2, action="append", default=[], metavar=("IMAGE", "LABELS")
    )
    parser.add_argument("--test", nargs=2, action="append", default=[], metavar=("IMAGE", "LABELS"))
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
    parser.add_argument("--no-merge", action="store_true", help="only run the methods")
    parser.add_argument("--merge-only", action="store_true", help="only merge methods/*.json")
    parser.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from ..compare import Budget, merge, run_method
    from ..errors import InputError

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
            device=args.device,
            threads=args.threads,
        )
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        for method in args.methods:
            result = run_method(method, args.train, args.test, args.out, budget, models.get(method))
            dice = [r["dice"] for r in result["rows"]]
            print(
                f"{method}: mean Dice {sum(dice) / max(len(dice), 1):.3f}, train {result['train_seconds']} s, "
                f"predict {result['predict_seconds']} s"
            )
    if not args.no_merge:
        for path in merge(args.out).values():
            print(f"wrote {path}")
    return 0
