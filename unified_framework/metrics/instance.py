"""Instance-segmentation metrics: IoU matching of labelled objects at IoU thresholds.

As in nuclei benchmarks (StarDist's ``matching``, the Data Science Bowl 2018), each
image is an integer label image where 0 is background and every other value is one
object. A ground-truth and a predicted object *match* when their IoU reaches the
threshold and each object is used at most once. From the matches:

* ``tp`` matched pairs, ``fp`` unmatched predictions, ``fn`` unmatched ground truth
* ``precision`` = tp / (tp + fp), ``recall`` = tp / (tp + fn),
  ``f1`` = 2 tp / (2 tp + fp + fn), ``accuracy`` = tp / (tp + fp + fn)
* ``mean_matched_iou`` = mean IoU of the matched pairs
* ``panoptic_quality`` = sum of matched IoUs / (tp + fp/2 + fn/2) (Kirillov et al. 2019)

A ratio with a zero denominator gets ``empty_score`` (default ``nan``), as in
:mod:`unified_framework.metrics.overlap`.

Matching methods: ``"optimal"`` maximises the number of matches and, among those, the
sum of matched IoUs (StarDist's cost, solved with
:func:`scipy.optimize.linear_sum_assignment`); ``"greedy"`` takes pairs by decreasing
IoU. For thresholds above 0.5 an object can overlap at most one other with IoU > 0.5,
so both give the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from ..errors import InputError
from .overlap import CHUNK_VOXELS, MAX_LOOKUP_RANGE, present_labels
from .validation import check_same_shape

MATCHING_METHODS = ("optimal", "greedy")


def _object_index(image: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Object ids of ``image`` (0 excluded) and a map from values to 0 (background) or 1 + position."""
    values = present_labels(image)
    ids = values[values != 0]
    low, high = (int(values[0]), int(values[-1])) if values.size else (0, 0)
    if high - low < MAX_LOOKUP_RANGE:
        table = np.zeros(high - low + 1, dtype=np.int64)
        table[ids - low] = np.arange(1, ids.size + 1)
        return ids, lambda chunk: table[chunk.astype(np.int64) - low]
    return ids, lambda chunk: np.where(chunk != 0, np.searchsorted(ids, chunk) + 1, 0)


def contingency_table(
    pred: np.ndarray, gt: np.ndarray
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse voxel counts per (ground-truth object, predicted object) pair.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer instance label images of the same shape (0 = background).

    Returns
    -------
    table : scipy.sparse.csr_matrix, shape (n_true + 1, n_pred + 1)
        ``table[i, j]`` voxels with ground truth ``true_ids[i - 1]`` and prediction
        ``pred_ids[j - 1]``; row and column 0 stand for background (``table[0, 0]``,
        background in both, is not counted).
    true_ids, pred_ids : numpy.ndarray
        Object labels of each image, sorted.
    """
    check_same_shape(pred, gt)
    true_ids, true_index = _object_index(gt)
    pred_ids, pred_index = _object_index(pred)
    shape = (true_ids.size + 1, pred_ids.size + 1)
    table = sparse.csr_matrix(shape, dtype=np.int64)
    flat_pred, flat_gt = pred.reshape(-1), gt.reshape(-1)
    for start in range(0, flat_pred.size, CHUNK_VOXELS):
        rows = true_index(flat_gt[start : start + CHUNK_VOXELS])
        cols = pred_index(flat_pred[start : start + CHUNK_VOXELS])
        # Background in both images is never needed (and is most voxels): skip it.
        keep = (rows > 0) | (cols > 0)
        rows, cols = rows[keep], cols[keep]
        # coo -> csr sums the duplicate (row, col) entries: a sparse histogram.
        table = (
            table
            + sparse.coo_matrix(
                (np.ones(rows.size, dtype=np.int64), (rows, cols)), shape=shape
            ).tocsr()
        )
    return table, true_ids, pred_ids


def iou_matrix(
    pred: np.ndarray, gt: np.ndarray
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse IoU between every ground-truth object (rows) and predicted object (columns).

    Returns
    -------
    iou : scipy.sparse.csr_matrix, shape (n_true, n_pred)
        Non-zero only for overlapping pairs.
    true_ids, pred_ids : numpy.ndarray
        Object labels indexing rows and columns.
    """
    table, true_ids, pred_ids = contingency_table(pred, gt)
    true_area = np.asarray(table.sum(axis=1)).ravel()[1:]
    pred_area = np.asarray(table.sum(axis=0)).ravel()[1:]
    overlap = table[1:, 1:].tocoo()
    union = true_area[overlap.row] + pred_area[overlap.col] - overlap.data
    iou = sparse.csr_matrix((overlap.data / union, (overlap.row, overlap.col)), shape=overlap.shape)
    return iou, true_ids, pred_ids


def match_instances(
    iou: sparse.spmatrix | np.ndarray, threshold: float, method: str = "optimal"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of objects whose IoU reaches ``threshold``.

    Parameters
    ----------
    iou : scipy.sparse matrix or numpy.ndarray, shape (n_true, n_pred)
    threshold : float
        Minimum IoU of a match, in (0, 1].
    method : {"optimal", "greedy"}
        See the module docstring.

    Returns
    -------
    true_index, pred_index, matched_iou : numpy.ndarray
        Row and column of each matched pair and its IoU.
    """
    if method not in MATCHING_METHODS:
        raise InputError(f"method: expected one of {', '.join(MATCHING_METHODS)}, got {method!r}")
    if not 0 < threshold <= 1:
        raise InputError(f"threshold: expected a value in (0, 1], got {threshold}")
    candidates = sparse.coo_matrix(iou)
    keep = candidates.data >= threshold
    rows, cols, scores = candidates.row[keep], candidates.col[keep], candidates.data[keep]
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    if method == "greedy":
        order = np.argsort(-scores, kind="stable")
        used_rows, used_cols, chosen = set(), set(), []
        for k in order:
            if rows[k] not in used_rows and cols[k] not in used_cols:
                used_rows.add(rows[k])
                used_cols.add(cols[k])
                chosen.append(k)
        picked = np.asarray(chosen, dtype=np.int64)
        return rows[picked].astype(np.int64), cols[picked].astype(np.int64), scores[picked]
    # Solve only among objects that have a candidate: the rest can never match.
    sub_rows, row_pos = np.unique(rows, return_inverse=True)
    sub_cols, col_pos = np.unique(cols, return_inverse=True)
    dense = np.zeros((sub_rows.size, sub_cols.size))
    dense[row_pos, col_pos] = scores
    # StarDist's cost: one match is worth more than any IoU sum (< 1/2), which breaks ties.
    costs = -(dense >= threshold).astype(float) - dense / (2 * min(dense.shape))
    r, c = linear_sum_assignment(costs)
    ok = dense[r, c] >= threshold
    return sub_rows[r[ok]].astype(np.int64), sub_cols[c[ok]].astype(np.int64), dense[r[ok], c[ok]]


def _ratio(numerator: float, denominator: float, empty_score: float) -> float:
    return float(numerator) / denominator if denominator > 0 else float(empty_score)


def instance_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    thresholds: Sequence[float] = (0.5,),
    method: str = "optimal",
    empty_score: float = np.nan,
) -> list[dict[str, float]]:
    """Detection and segmentation quality of instance label images at IoU thresholds.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer instance label images of the same shape (0 = background).
    thresholds : sequence of float
        IoU thresholds in (0, 1].
    method : {"optimal", "greedy"}
        Matching method (see the module docstring).
    empty_score : float
        Value of a ratio whose denominator is zero.

    Returns
    -------
    list of dict
        One dict per threshold with ``threshold``, ``n_true``, ``n_pred``, ``tp``,
        ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``accuracy``,
        ``mean_matched_iou`` and ``panoptic_quality``.
    """
    iou, true_ids, pred_ids = iou_matrix(pred, gt)
    n_true, n_pred = true_ids.size, pred_ids.size
    results = []
    for threshold in thresholds:
        _, _, matched = match_instances(iou, float(threshold), method)
        tp = matched.size
        fp, fn = n_pred - tp, n_true - tp
        results.append(
            {
                "threshold": float(threshold),
                "n_true": n_true,
                "n_pred": n_pred,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": _ratio(tp, tp + fp, empty_score),
                "recall": _ratio(tp, tp + fn, empty_score),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty_score),
                "accuracy": _ratio(tp, tp + fp + fn, empty_score),
                "mean_matched_iou": _ratio(matched.sum(), tp, empty_score),
                "panoptic_quality": _ratio(matched.sum(), tp + fp / 2 + fn / 2, empty_score),
            }
        )
    return results
