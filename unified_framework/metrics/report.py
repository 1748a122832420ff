"""Score a predicted label volume against ground truth: one table row per class.

:func:`score_volumes` validates the inputs and combines the overlap, volume and surface
metrics of :mod:`.overlap` and :mod:`.surface`; :func:`score_instances` does the same
for instance label images with :mod:`.instance`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from .instance import instance_scores
from .overlap import overlap_scores, present_labels
from .surface import SURFACE_METRICS, surface_scores
from .validation import as_label_array, as_spacing, check_same_shape

logger = logging.getLogger(__name__)

COLUMNS = (
    "label",
    "name",
    "gt_voxels",
    "pred_voxels",
    "dice",
    "iou",
    "precision",
    "recall",
    "f1",
    *SURFACE_METRICS,
    "gt_volume",
    "pred_volume",
    "volume_difference",
    "abs_volume_difference",
    "relative_volume_difference",
    "tp",
    "fp",
    "fn",
)


def validate_pair(
    pred, gt, pred_name: str = "prediction", gt_name: str = "ground truth"
) -> tuple[np.ndarray, np.ndarray]:
    """Return both images as integer arrays after checking dtype, NaNs and shapes.

    Raises
    ------
    InputError
        Naming ``pred_name``/``gt_name`` when a check fails.
    """
    pred = as_label_array(pred, pred_name)
    gt = as_label_array(gt, gt_name)
    check_same_shape(pred, gt, pred_name, gt_name)
    return pred, gt


def score_volumes(
    pred,
    gt,
    labels: Sequence[int] | None = None,
    spacing: Sequence[float] | float | None = None,
    names: Sequence[str] | None = None,
    empty_score: float = np.nan,
    surface: bool = True,
    percentile: float = 95.0,
    connectivity: int = 1,
    pred_name: str = "prediction",
    gt_name: str = "ground truth",
    progress: bool = False,
) -> pd.DataFrame:
    """Per-class overlap, volume and surface metrics of a predicted label volume.

    Parameters
    ----------
    pred, gt : array_like
        Label images of the same shape (integer, bool, or float holding whole numbers).
    labels : sequence of int, optional
        Classes to score. Default: every label in either image except 0 (background),
        so labels that occur only in the prediction are reported too (with
        ``gt_voxels == 0``) and logged as a warning.
    spacing : sequence of float or float, optional
        Voxel size per axis (e.g. micrometres); distances are in this unit and volumes
        in its cube. Default 1.0 (voxels).
    names : sequence of str, optional
        A name per label for the ``name`` column (default: the label as text).
    empty_score : float
        Value of Dice, IoU, precision, recall or F1 when its denominator is zero
        (default ``nan``; see :mod:`.overlap`).
    surface : bool
        Compute the surface distances (``hausdorff``, ``hd95``, ``assd``), the
        costly part.
    percentile : float
        Percentile of the ``hd95`` column.
    connectivity : int
        Surface definition, see :func:`.surface.surface_mask`.
    pred_name, gt_name : str
        How to call the images in error messages (their file names).
    progress : bool
        Show a progress bar over the classes (on a terminal only).

    Returns
    -------
    pandas.DataFrame
        One row per label with the columns in :data:`COLUMNS` (surface columns are NaN
        when ``surface=False``). ``df.attrs["pred_only_labels"]`` lists the labels
        predicted but absent from the ground truth.

    Raises
    ------
    InputError
        On mismatched shapes, NaNs, non-integer labels, bad spacing or names.
    """
    pred, gt = validate_pair(pred, gt, pred_name, gt_name)
    voxel = as_spacing(spacing, pred.ndim)
    requested = None
    if labels is not None:
        requested = np.asarray(labels).reshape(-1)
        if requested.size and not np.issubdtype(requested.dtype, np.integer):
            raise InputError(f"labels: expected integers, got {requested.tolist()}")
    scores = overlap_scores(pred, gt, requested, voxel, empty_score)
    found = scores["label"]
    if names is None:
        names = [str(label) for label in found]
    elif len(names) != found.size:
        raise InputError(
            f"names: expected {found.size} names (one per label {found.tolist()}), got {len(names)}"
        )
    if surface:
        scores.update(surface_scores(pred, gt, found, voxel, percentile, connectivity, progress))
    else:
        scores.update({name: np.full(found.size, np.nan) for name in SURFACE_METRICS})
    table = pd.DataFrame({"name": list(names), **scores}).reindex(columns=list(COLUMNS))

    gt_labels = present_labels(gt)
    pred_only = sorted(set(present_labels(pred).tolist()) - set(gt_labels.tolist()) - {0})
    if pred_only:
        logger.warning("%s has labels absent from %s: %s", pred_name, gt_name, pred_only)
    table.attrs["pred_only_labels"] = pred_only
    return table


def score_instances(
    pred,
    gt,
    thresholds: Sequence[float] = (0.5,),
    method: str = "optimal",
    empty_score: float = np.nan,
    pred_name: str = "prediction",
    gt_name: str = "ground truth",
) -> pd.DataFrame:
    """Instance matching scores at IoU thresholds, one row per threshold.

    Parameters
    ----------
    pred, gt : array_like
        Instance label images of the same shape (0 = background).
    thresholds : sequence of float
        IoU thresholds in (0, 1].
    method : {"optimal", "greedy"}
        See :mod:`.instance`.
    empty_score : float
        Value of a ratio whose denominator is zero.
    pred_name, gt_name : str
        How to call the images in error messages.

    Returns
    -------
    pandas.DataFrame
        Columns as returned by :func:`.instance.instance_scores`.
    """
    pred, gt = validate_pair(pred, gt, pred_name, gt_name)
    return pd.DataFrame(instance_scores(pred, gt, thresholds, method, empty_score))
