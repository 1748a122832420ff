"""``mdlma score``: compare a predicted label volume with ground truth.

Examples
--------
``mdlma score pred.tif gt.tif --labels 1 2 --names bone implant --csv scores.csv``
``mdlma score nuclei_pred.tif nuclei_gt.tif --instances --thresholds 0.5 0.75``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

from ..utils.text import printable

logger = logging.getLogger(__name__)

# Columns printed on the terminal; JSON and CSV hold every column.
TABLE_COLUMNS = (
    "label",
    "name",
    "gt_voxels",
    "pred_voxels",
    "dice",
    "iou",
    "precision",
    "recall",
    "hausdorff",
    "hd95",
    "assd",
    "relative_volume_difference",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a segmentation against ground truth (Dice, IoU, HD95, instance matching)",
        description=(
            "Score a predicted label volume against ground truth: per-class Dice, IoU, precision, recall, "
            "Hausdorff/HD95/ASSD in physical units and volume differences, or with --instances "
            "instance matching at IoU thresholds. Files are read with the framework's readers "
            "(TIFF, HDF5 'file.h5::/dataset', NIfTI, DICOM, Zarr)."
        ),
    )
    parser.add_argument("pred", metavar="PRED", help="predicted label volume")
    parser.add_argument("gt", metavar="GT", help="ground-truth label volume")
    parser.add_argument(
        "--labels", type=int, nargs="+", metavar="L", help="labels to score (default: all except 0)"
    )
    parser.add_argument(
        "--names", nargs="+", metavar="NAME", help="one name per label, in the order of --labels"
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="S",
        help="voxel size per axis (Z Y X, micrometres); default: from GT",
    )
    parser.add_argument(
        "--empty-score",
        type=float,
        default=math.nan,
        metavar="V",
        help="score of a ratio with zero denominator, e.g. Dice of a class absent from both (default: nan)",
    )
    parser.add_argument(
        "--no-surface", action="store_true", help="skip Hausdorff/HD95/ASSD (the slow part)"
    )
    parser.add_argument(
        "--percentile", type=float, default=95.0, help="percentile of the hd95 column (default 95)"
    )
    parser.add_argument(
        "--instances", action="store_true", help="treat PRED and GT as instance label images"
    )
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.5],
        metavar="T",
        help="IoU thresholds for --instances (default 0.5)",
    )
    parser.add_argument(
        "--matching",
        choices=("optimal", "greedy"),
        default="optimal",
        help="instance matching method (default optimal)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    parser.add_argument("--csv", type=Path, metavar="OUT", help="write the table as CSV")
    parser.set_defaults(func=_score)


def _json_value(value):
    """Strict JSON: NaN becomes null, infinities the strings "inf"/"-inf"."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _score(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import InputError
    from ..io import read_volume
    from ..metrics.report import score_instances, score_volumes
    from ..utils.atomic import atomic_path, write_text_atomic

    if args.instances and (args.labels or args.names):
        raise InputError(
            "--labels/--names: not used with --instances (every non-zero value is an object)"
        )
    pred_volume = read_volume(args.pred, grey=True)
    gt_volume = read_volume(args.gt, grey=True)
    pred_name, gt_name = str(args.pred), str(args.gt)
    if args.spacing is not None:
        spacing = tuple(args.spacing)
    else:
        spacing = tuple(gt_volume.spacing)
        # Different numbers of axes are reported by the shape check below.
        if len(pred_volume.spacing) == len(spacing) and not np.allclose(
            pred_volume.spacing, spacing
        ):
            logger.warning(
                "spacing differs: %s %s, %s %s; using the ground truth's",
                pred_name,
                pred_volume.spacing,
                gt_name,
                spacing,
            )
    pred, gt = np.asarray(pred_volume.data), np.asarray(gt_volume.data)

    if args.instances:
        table = score_instances(
            pred, gt, args.thresholds, args.matching, args.empty_score, pred_name, gt_name
        )
        printed = table
        extra = {}
    else:
        table = score_volumes(
            pred,
            gt,
            labels=args.labels,
            spacing=spacing,
            names=args.names,
            empty_score=args.empty_score,
            surface=not args.no_surface,
            percentile=args.percentile,
            pred_name=pred_name,
            gt_name=gt_name,
            progress=True,
        )
        printed = table.loc[:, list(TABLE_COLUMNS)]
        if args.no_surface:
            printed = printed.drop(columns=["hausdorff", "hd95", "assd"])
        extra = {"pred_only_labels": table.attrs["pred_only_labels"]}

    print(f"prediction   {printable(pred_name)}  shape {pred.shape}")
    print(f"ground truth {printable(gt_name)}  shape {gt.shape}")
    print(
        f"spacing      {' x '.join(f'{s:g}' for s in spacing)} (distances in these units, volumes in their cube)"
    )
    print()
    print(printed.to_string(index=False, float_format=lambda v: f"{v:.4g}"))

    if args.json:
        document = {
            "pred": pred_name,
            "gt": gt_name,
            "shape": list(gt.shape),
            "spacing": list(spacing),
            "mode": "instances" if args.instances else "semantic",
            **extra,
            "rows": [
                {key: _json_value(value) for key, value in row.items()}
                for row in table.to_dict(orient="records")
            ],
        }
        write_text_atomic(args.json, json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {printable(args.json)}")
    if args.csv:
        with atomic_path(args.csv) as tmp:
            table.to_csv(tmp, index=False)
        print(f"wrote {printable(args.csv)}")
    return 0
