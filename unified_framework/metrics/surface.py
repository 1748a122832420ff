"""Surface-distance metrics: Hausdorff distance, HD95 and average symmetric surface distance.

Definitions
-----------
The *surface* of a mask is the set of its voxels with at least one face-neighbour
(``connectivity=1``; 26-neighbourhood with ``connectivity=3``) outside the mask;
outside the array counts as background, so an object touching the image border has a
surface there. Distances are Euclidean between voxel centres, in the units of
``spacing`` (anisotropic voxels are honoured).

With ``d(A->B)`` the distances from every surface voxel of A to the nearest surface
voxel of B:

* ``hausdorff`` = max(max d(P->G), max d(G->P))
* ``hd95`` = max(p95 d(P->G), p95 d(G->P)) -- MONAI's ``compute_hausdorff_distance``
  with ``percentile=95`` (numpy's linear interpolation)
* ``assd`` = (sum d(P->G) + sum d(G->P)) / (|surface P| + |surface G|) -- MONAI's
  ``compute_average_surface_distance(symmetric=True)``

Empty masks
-----------
Both empty: ``nan`` (nothing to measure). Exactly one empty: ``inf`` (the other
surface has no nearest point), as MONAI does for an empty prediction.

The nearest-surface distances come from :func:`scipy.ndimage.distance_transform_edt`
with ``sampling=spacing`` on the bounding box of both masks only, never from pairwise
distances.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage as ndi
from tqdm import tqdm

from ..errors import InputError
from .validation import as_spacing, check_same_shape

SURFACE_METRICS = ("hausdorff", "hd95", "assd")


def surface_mask(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Return the surface voxels of a boolean mask.

    Parameters
    ----------
    mask : numpy.ndarray of bool
    connectivity : int
        Neighbourhood defining "touches the background": 1 = faces, ``mask.ndim`` = faces,
        edges and corners (see :func:`scipy.ndimage.generate_binary_structure`).

    Returns
    -------
    numpy.ndarray of bool
        Voxels of ``mask`` with at least one neighbour outside it or outside the array.
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndi.generate_binary_structure(mask.ndim, connectivity)
    return mask & ~ndi.binary_erosion(mask, structure=structure, border_value=0)


def bounding_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box (tuple of slices) holding every ``True`` voxel of ``masks``; ``None`` if all are empty."""
    union = np.logical_or.reduce([np.asarray(m, dtype=bool) for m in masks])
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def surface_distances(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    spacing: ArrayLike | None = None,
    connectivity: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of one mask to the nearest surface voxel of the other.

    Parameters
    ----------
    pred_mask, gt_mask : numpy.ndarray of bool
        Masks of the same shape.
    spacing : sequence of float, optional
        Voxel size per axis (default 1.0: distances in voxels).
    connectivity : int
        Surface definition, see :func:`surface_mask`.

    Returns
    -------
    pred_to_gt, gt_to_pred : numpy.ndarray of float
        One distance per surface voxel of the prediction (resp. ground truth), in
        C order of the voxels. If the other mask is empty, all distances are ``inf``.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    gt_mask = np.asarray(gt_mask, dtype=bool)
    check_same_shape(pred_mask, gt_mask)
    voxel = as_spacing(spacing, pred_mask.ndim)
    box = bounding_box(pred_mask, gt_mask)
    if box is None:
        return np.zeros(0), np.zeros(0)
    # Everything outside the box is background and erosion treats the array border as
    # background too, so surfaces and nearest-surface distances computed on the crop are
    # exactly those of the full arrays: no margin is needed.
    pred_surface = surface_mask(pred_mask[box], connectivity)
    gt_surface = surface_mask(gt_mask[box], connectivity)
    return _nearest_distances(pred_surface, gt_surface, voxel), _nearest_distances(
        gt_surface, pred_surface, voxel
    )


def _nearest_distances(source: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    if not source.any():
        return np.zeros(0)
    if not target.any():
        return np.full(int(source.sum()), np.inf)
    return ndi.distance_transform_edt(~target, sampling=spacing)[source]


def surface_metrics(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    spacing: ArrayLike | None = None,
    percentile: float = 95.0,
    connectivity: int = 1,
) -> dict[str, float]:
    """Hausdorff distance, percentile Hausdorff distance and ASSD of two masks.

    Parameters
    ----------
    pred_mask, gt_mask : numpy.ndarray of bool
        Masks of the same shape.
    spacing : sequence of float, optional
        Voxel size per axis (default 1.0).
    percentile : float
        Percentile for ``hd95`` (the key keeps its name whatever the value).
    connectivity : int
        Surface definition, see :func:`surface_mask`.

    Returns
    -------
    dict
        ``hausdorff``, ``hd95``, ``assd`` (see the module docstring for the
        definitions and the empty-mask convention).
    """
    _check_percentile(percentile)
    pred_to_gt, gt_to_pred = surface_distances(pred_mask, gt_mask, spacing, connectivity)
    if pred_to_gt.size == 0 and gt_to_pred.size == 0:
        return dict.fromkeys(SURFACE_METRICS, np.nan)
    if pred_to_gt.size == 0 or gt_to_pred.size == 0:
        return dict.fromkeys(SURFACE_METRICS, np.inf)
    return {
        "hausdorff": float(max(pred_to_gt.max(), gt_to_pred.max())),
        "hd95": float(
            max(np.percentile(pred_to_gt, percentile), np.percentile(gt_to_pred, percentile))
        ),
        "assd": float((pred_to_gt.sum() + gt_to_pred.sum()) / (pred_to_gt.size + gt_to_pred.size)),
    }


def _check_percentile(percentile: float) -> None:
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile: expected a value between 0 and 100, got {percentile}")


def _class_boxes(
    pred: np.ndarray, gt: np.ndarray, labels: np.ndarray
) -> list[tuple[slice, ...] | None]:
    """Bounding box of each label in either image, from one pass of ``find_objects`` per image."""
    if labels.size and labels.min() >= 1 and labels.max() < 1 << 24:
        max_label = int(labels.max())
        pred_objects = ndi.find_objects(pred, max_label=max_label)
        gt_objects = ndi.find_objects(gt, max_label=max_label)
        boxes: list[tuple[slice, ...] | None] = []
        for label in labels:
            found = [
                box for box in (pred_objects[label - 1], gt_objects[label - 1]) if box is not None
            ]
            if not found:
                boxes.append(None)
                continue
            boxes.append(
                tuple(
                    slice(min(b[a].start for b in found), max(b[a].stop for b in found))
                    for a in range(pred.ndim)
                )
            )
        return boxes
    # Label 0 or negative labels: find_objects cannot index them.
    return [bounding_box(pred == label, gt == label) for label in labels]


def surface_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: ArrayLike,
    spacing: ArrayLike | None = None,
    percentile: float = 95.0,
    connectivity: int = 1,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per-class surface metrics of two integer label images.

    Each class is cropped to the bounding box of its voxels in either image before the
    distance transforms, so the cost scales with the objects, not the volume.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Integer label images of the same shape.
    labels : sequence of int
        Classes to score.
    spacing, percentile, connectivity
        See :func:`surface_metrics`.
    progress : bool
        Show a progress bar per class (on a terminal only).

    Returns
    -------
    dict of str to numpy.ndarray
        ``hausdorff``, ``hd95``, ``assd``, one value per label.
    """
    check_same_shape(pred, gt)
    voxel = as_spacing(spacing, pred.ndim)
    _check_percentile(percentile)
    chosen = np.asarray(labels, dtype=np.int64).reshape(-1)
    if np.issubdtype(pred.dtype, np.integer) and np.issubdtype(gt.dtype, np.integer):
        boxes = _class_boxes(pred, gt, chosen)
    else:
        boxes = [bounding_box(pred == label, gt == label) for label in chosen]
    out = {name: np.full(chosen.size, np.nan) for name in SURFACE_METRICS}
    steps = tqdm(
        zip(chosen, boxes),
        total=chosen.size,
        desc="surface distances",
        unit="class",
        disable=None if progress else True,
        leave=False,
    )
    for i, (label, box) in enumerate(steps):
        if box is None:
            continue
        result = surface_metrics(
            pred[box] == label, gt[box] == label, voxel, percentile, connectivity
        )
        for name in SURFACE_METRICS:
            out[name][i] = result[name]
    return out
