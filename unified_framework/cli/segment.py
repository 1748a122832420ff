"""``mdlma segment``: classical baselines and scored, measured runs of any method.

``segment classical`` runs multi-Otsu or the marker watershed; ``segment evaluate``
runs any segmentation command (e.g. ``mdlma sun predict``). Both run interactively or
as SLURM jobs (the dashboard's comparison page submits them); ``--report`` writes a
JSON file with the parameters, the time, CPU, memory and GPU used and, with
``--ground-truth``, the per-class scores.
"""

from __future__ import annotations

import argparse

from ..classical.run import ORDER_FROM_TRUTH
from ..errors import InputError
from ..utils.text import printable


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="classical baselines (multi-Otsu, watershed); measure and score methods"
    )
    verbs = parser.add_subparsers(dest="segment_verb", metavar="METHOD")
    classical = verbs.add_parser(
        "classical",
        help="split a grey-value volume into intensity classes (multi-Otsu or marker watershed)",
        description="Split a grey-value volume into intensity classes; labels 0..classes-1 dark to bright "
        "unless --label-order maps them to the dataset's class numbers.",
    )
    classical.add_argument(
        "input", help="grey-value volume (any format mdlma reads; file.h5::/dataset allowed)"
    )
    classical.add_argument(
        "-o", "--out", required=True, help="label volume to write (format from the suffix)"
    )
    classical.add_argument("--method", choices=["multi-otsu", "watershed"], default="multi-otsu")
    classical.add_argument(
        "--classes", type=int, default=3, help="number of intensity classes (default 3)"
    )
    classical.add_argument(
        "--smoothing", type=float, default=None, help="Gaussian sigma in voxels (default: method's)"
    )
    classical.add_argument(
        "--label-order",
        default=None,
        help="class number per intensity rank, darkest first, e.g. 0,0,3,1,2; 'truth': by majority "
        "vote against --ground-truth",
    )
    classical.add_argument("--ground-truth", default=None, help="label volume to score against")
    classical.add_argument(
        "--report", default=None, help="write parameters, resources and scores to this JSON file"
    )
    classical.add_argument(
        "--class-names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="name of each ground-truth class by label, background first, for the scores",
    )
    classical.set_defaults(func=_classical)

    evaluate = verbs.add_parser(
        "evaluate",
        help="run any segmentation command, measure its time/CPU/memory/GPU and score its output",
        description="Run a segmentation command (after '--'), measure it and score the label volume it writes "
        "against ground truth; the report has the same form as 'segment classical --report'. Example: "
        "mdlma segment evaluate --out seg.tif --ground-truth gt.tif --report r.json -- "
        "mdlma sun predict scan.tif --model sun.pt --out seg.tif",
    )
    evaluate.add_argument("-o", "--out", required=True, help="the label volume the command writes")
    evaluate.add_argument("--ground-truth", default=None, help="label volume to score against")
    evaluate.add_argument("--report", required=True, help="JSON file for resources and scores")
    evaluate.add_argument("--method", default="", help="name of the method in the report")
    evaluate.add_argument(
        "--class-names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="name of each ground-truth class by label, background first",
    )
    evaluate.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- then the command and its arguments"
    )
    evaluate.set_defaults(func=_evaluate)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def parse_label_order(text: str | None) -> list[int] | str | None:
    """Parse ``"0,1,3,2"`` into ``[0, 1, 3, 2]``; ``"truth"`` passes through; empty gives ``None``."""
    if not text:
        return None
    if text == ORDER_FROM_TRUTH:
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(
            f"--label-order: expected comma-separated integers such as 0,1,3,2 or 'truth', got {text!r}"
        ) from None


def _classical(args: argparse.Namespace) -> int:
    from ..classical import run_classical

    result = run_classical(
        args.input,
        args.out,
        args.method,
        classes=args.classes,
        smoothing=args.smoothing,
        label_order=parse_label_order(args.label_order),
        ground_truth=args.ground_truth,
        report=args.report,
        class_names=args.class_names,
    )
    print(
        f"{args.method}: wrote {printable(args.out)} {tuple(result['shape'])} in {result['resources']['wall_time_s']:.2f} s"
    )
    for row in result.get("scores", []):
        scores = "  ".join(
            f"{k} {row[k]:.4f}" if row[k] is not None else f"{k} -"
            for k in ("dice", "iou", "f1", "hd95")
        )
        print(f"  label {row['label']}: {scores}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..classical import evaluate_command

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise InputError("segment evaluate: give the command to run after '--'")
    result = evaluate_command(
        command,
        args.out,
        ground_truth=args.ground_truth,
        report=args.report,
        method=args.method,
        class_names=args.class_names,
    )
    print(
        f"{result['method']}: {printable(args.out)} in {result['resources']['wall_time_s']:.2f} s"
    )
    return 0
