"""Voxel-overlap metrics from a confusion matrix: Dice, IoU, precision, recall, F1, volumes.

All per-class scores are computed from one confusion matrix over every label that
occurs in either image, so a voxel of an unrequested class still counts as a false
positive or false negative for the requested ones.

Empty masks
-----------
A ratio whose denominator is zero gets ``empty_score`` (default ``nan``, as in
nnU-Net's evaluation: a class absent from both images has no Dice). This matches
scikit-learn's ``zero_division`` parameter: Dice/IoU/F1 are undefined only when the
class is absent from both images, precision when it is never predicted, recall when it
is absent from the ground truth. Pass ``empty_score=1.0`` for the "both empty is a
perfect match" convention (MONAI's ``DiceMetric(ignore_empty=False)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .validation import as_spacing, check_same_shape

# Voxels processed per step: bounds the int64 temporaries to ~100 MB whatever the volume size.
CHUNK_VOXELS = 1 << 23
# Above this label range, a lookup table would cost more memory than sorting.
MAX_LOOKUP_RANGE = 1 << 22
# Label ranges up to this size get a full value-by-value confusion matrix (bincount of pairs).
MAX_DENSE_VALUES = 256


def present_labels(*arrays: np.ndarray) -> np.ndarray:
    """Return the sorted label values occurring in any of the integer ``arrays``."""
    found = []
    for array in arrays:
        if array.size == 0:
            continue
        low, high = int(array.min()), int(array.max())
        if high - low < MAX_LOOKUP_RANGE:
            counts = _bincount_chunked(array, low, high - low + 1)
            found.append(np.flatnonzero(counts) + low)
        else:
            found.append(np.unique(array))
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(found)).astype(np.int64)


def _bincount_chunked(array: np.ndarray, offset: int, length: int) -> np.ndarray:
    flat = array.reshape(-1)
    counts = np.zeros(length, dtype=np.int64)
    for start in range(0, flat.size, CHUNK_VOXELS):
        chunk = flat[start : start + CHUNK_VOXELS].astype(np.int64) - offset
        counts += np.bincount(chunk, minlength=length)
    return counts


def _label_indexer(labels: np.ndarray, low: int, high: int) -> Callable[[np.ndarray], np.ndarray]:
    """Return a function mapping label values to their position in ``labels`` (-1: absent)."""
    if high - low < MAX_LOOKUP_RANGE:
        table = np.full(high - low + 1, -1, dtype=np.int64)
        table[labels - low] = np.arange(labels.size)
        return lambda values: table[values.astype(np.int64) - low]

    def search(values: np.ndarray) -> np.ndarray:
        position = np.searchsorted(labels, values).clip(0, labels.size - 1)
        return np.where(labels[position] == values, position, -1)

    return search


def _dense_confusion(pred: np.ndarray, gt: np.ndarray, low: int, n_values: int) -> np.ndarray:
    """Confusion matrix over every value in ``low .. low + n_values - 1`` (one bincount per chunk)."""
    flat_pred, flat_gt = pred.reshape(-1), gt.reshape(-1)
    counts = np.zeros(n_values * n_values, dtype=np.int64)
    for start in range(0, flat_pred.size, CHUNK_VOXELS):
        code = flat_gt[start : start + CHUNK_VOXELS].astype(np.int64)
        code -= low
        code *= n_values
        code += flat_pred[start : start + CHUNK_VOXELS].astype(np.int64)
        code -= low
        counts += np.bincount(code, minlength=n_values * n_values)
    return counts.reshape(n_values, n_values)


def _sparse_confusion(
    pred: np.ndarray, gt: np.ndarray, labels: np.ndarray, low: int, high: int
) -> np.ndarray:
    """Confusion matrix over ``labels`` only, mapping values to label positions first."""
    n = labels.size
    index_of = _label_indexer(labels, low, high)
    flat_pred, flat_gt = pred.reshape(-1), gt.reshape(-1)
    counts = np.zeros(n * n, dtype=np.int64)
    for start in range(0, flat_pred.size, CHUNK_VOXELS):
        p = index_of(flat_pred[start : start + CHUNK_VOXELS])
        g = index_of(flat_gt[start : start + CHUNK_VOXELS])
        keep = (p >= 0) & (g >= 0)
        counts += np.bincount(g[keep] * n + p[keep], minlength=n * n)
    return counts.reshape(n, n)


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, labels: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Count voxels per (ground-truth label, predicted label) pair.

    Follows scikit-learn's convention: ``matrix[i, j]`` is the number of voxels whose
    ground truth is ``labels[i]`` and whose prediction is ``labels[j]``.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer label images of the same shape.
    labels : sequence of int, optional
        Labels indexing the matrix. Voxels whose prediction or ground truth is not in
        ``labels`` are not counted (as in :func:`sklearn.metrics.confusion_matrix`).
        Default: every label occurring in either image.

    Returns
    -------
    matrix : numpy.ndarray of int64, shape (L, L)
    labels : numpy.ndarray of int64, shape (L,)
        The sorted labels indexing both axes.
    """
    check_same_shape(pred, gt)
    requested = None if labels is None else np.unique(np.asarray(labels, dtype=np.int64))
    if pred.size == 0:
        found = np.zeros(0, dtype=np.int64) if requested is None else requested
        return np.zeros((found.size, found.size), dtype=np.int64), found
    bounds = [int(pred.min()), int(pred.max()), int(gt.min()), int(gt.max())]
    if requested is not None and requested.size:
        bounds += [int(requested[0]), int(requested[-1])]
    low, high = min(bounds), max(bounds)
    n_values = high - low + 1
    if n_values <= MAX_DENSE_VALUES:
        # Few possible values (semantic labels): count every pair at once, then pick.
        dense = _dense_confusion(pred, gt, low, n_values)
        if requested is None:
            requested = np.flatnonzero(dense.sum(axis=0) + dense.sum(axis=1)) + low
        index = requested - low
        return dense[np.ix_(index, index)], requested
    if requested is None:
        requested = present_labels(pred, gt)
    return _sparse_confusion(pred, gt, requested, low, high), requested


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty_score: float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    out = np.full(np.broadcast(numerator, denominator).shape, float(empty_score))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def scores_from_confusion(matrix: np.ndarray, empty_score: float = np.nan) -> dict[str, np.ndarray]:
    """Per-class overlap scores from a confusion matrix.

    Parameters
    ----------
    matrix : numpy.ndarray, shape (L, L)
        Rows: ground truth, columns: prediction (see :func:`confusion_matrix`). It must
        cover every label present, otherwise false positives/negatives are missed.
    empty_score : float
        Value of a score whose denominator is zero (see module docstring).

    Returns
    -------
    dict of str to numpy.ndarray
        ``tp``, ``fp``, ``fn`` (voxel counts) and ``dice``, ``iou``, ``precision``,
        ``recall``, ``f1``, one entry per row of ``matrix``. ``f1`` equals ``dice``
        for voxel classification; both are given for readers from either field.
    """
    tp = np.diag(matrix).astype(np.int64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    dice = _ratio(2 * tp, 2 * tp + fp + fn, empty_score)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "dice": dice,
        "iou": _ratio(tp, tp + fp + fn, empty_score),
        "precision": _ratio(tp, tp + fp, empty_score),
        "recall": _ratio(tp, tp + fn, empty_score),
        "f1": dice.copy(),
    }


def volume_scores(
    pred_voxels: np.ndarray,
    gt_voxels: np.ndarray,
    spacing: ArrayLike | None = None,
    ndim: int = 3,
) -> dict[str, np.ndarray]:
    """Physical volumes and their differences from voxel counts.

    Parameters
    ----------
    pred_voxels, gt_voxels : numpy.ndarray
        Voxel counts per class in prediction and ground truth.
    spacing : sequence of float, optional
        Voxel size per axis; volumes are in its unit cubed (default: voxels).
    ndim : int
        Image dimensionality (used to expand a scalar or missing ``spacing``).

    Returns
    -------
    dict of str to numpy.ndarray
        ``pred_volume``, ``gt_volume``, ``volume_difference`` (pred - gt, signed),
        ``abs_volume_difference`` and ``relative_volume_difference`` ((pred - gt) / gt;
        0 where both are empty, ``inf`` where only the ground truth is empty).
    """
    voxel_volume = float(np.prod(as_spacing(spacing, ndim)))
    pred_volume = np.asarray(pred_voxels, dtype=float) * voxel_volume
    gt_volume = np.asarray(gt_voxels, dtype=float) * voxel_volume
    difference = pred_volume - gt_volume
    relative = np.where(difference == 0, 0.0, np.inf)
    np.divide(difference, gt_volume, out=relative, where=gt_volume > 0)
    return {
        "pred_volume": pred_volume,
        "gt_volume": gt_volume,
        "volume_difference": difference,
        "abs_volume_difference": np.abs(difference),
        "relative_volume_difference": relative,
    }


def overlap_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: ArrayLike | None = None,
    spacing: ArrayLike | None = None,
    empty_score: float = np.nan,
) -> dict[str, np.ndarray]:
    """Per-class overlap and volume scores of two label images.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer label images of the same shape.
    labels : sequence of int, optional
        Classes to score (default: every label in either image except 0).
    spacing : sequence of float, optional
        Voxel size per axis, for the volumes.
    empty_score : float
        Value of a ratio whose denominator is zero (default ``nan``).

    Returns
    -------
    dict of str to numpy.ndarray
        ``label``, ``gt_voxels``, ``pred_voxels``, the entries of
        :func:`scores_from_confusion` and of :func:`volume_scores`, one value per label.
    """
    check_same_shape(pred, gt)
    present_matrix, present = confusion_matrix(pred, gt)
    chosen = np.asarray(
        present[present != 0] if labels is None else labels, dtype=np.int64
    ).reshape(-1)
    # Requested labels absent from both images get empty rows and columns.
    matrix_labels = np.union1d(present, chosen)
    matrix = np.zeros((matrix_labels.size, matrix_labels.size), dtype=np.int64)
    where = np.searchsorted(matrix_labels, present)
    matrix[np.ix_(where, where)] = present_matrix
    rows = np.searchsorted(matrix_labels, chosen)
    scores = {key: value[rows] for key, value in scores_from_confusion(matrix, empty_score).items()}
    gt_voxels = matrix.sum(axis=1)[rows]
    pred_voxels = matrix.sum(axis=0)[rows]
    return {
        "label": chosen,
        "gt_voxels": gt_voxels,
        "pred_voxels": pred_voxels,
        **scores,
        **volume_scores(pred_voxels, gt_voxels, spacing, pred.ndim),
    }
