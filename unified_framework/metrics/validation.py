"""Checks shared by the metric functions: label arrays, matching shapes, voxel spacing.

Every check raises :class:`~unified_framework.errors.InputError` with a one-line
message naming the offending array (a file name where the caller knows it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError


def as_label_array(array, name: str = "array") -> np.ndarray:
    """Return ``array`` as an integer numpy array of labels.

    Boolean arrays become ``uint8``; float arrays are accepted only when every value is
    a whole number (as written by tools that store labels as float32) and are converted
    to ``int64``.

    Parameters
    ----------
    array : array_like
        Label image (numpy, dask or anything ``numpy.asarray`` understands).
    name : str
        How to call the array in error messages, e.g. its file name.

    Returns
    -------
    numpy.ndarray
        Integer array with the same shape.

    Raises
    ------
    InputError
        If the array holds NaNs, non-integer floats, or has a non-numeric dtype.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.view(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{name}: expected an integer label image, got dtype {array.dtype}")
    if np.isnan(array).any():
        raise InputError(f"{name}: label image contains NaN values")
    if not np.isfinite(array).all():
        raise InputError(f"{name}: label image contains infinite values")
    as_int = array.astype(np.int64)
    if not np.array_equal(as_int, array):
        raise InputError(
            f"{name}: expected integer labels, found non-integer values in a {array.dtype} image"
        )
    return as_int


def check_same_shape(
    pred: np.ndarray, gt: np.ndarray, pred_name: str = "prediction", gt_name: str = "ground truth"
) -> None:
    """Raise :class:`InputError` unless ``pred`` and ``gt`` have the same shape."""
    if pred.shape != gt.shape:
        raise InputError(
            f"shape mismatch: {pred_name} has shape {tuple(pred.shape)} but {gt_name} has shape {tuple(gt.shape)}"
        )


def as_spacing(spacing: ArrayLike | None, ndim: int) -> np.ndarray:
    """Return the voxel spacing as a float array of length ``ndim``.

    Parameters
    ----------
    spacing : sequence of float, float or None
        Physical size of a voxel along each axis (same axis order as the arrays).
        A scalar means isotropic voxels; ``None`` means 1.0 (distances in voxels).
    ndim : int
        Number of image dimensions.

    Raises
    ------
    InputError
        If the length does not match ``ndim`` or a value is not finite and positive.
    """
    if spacing is None:
        return np.ones(ndim)
    values = np.atleast_1d(np.asarray(spacing, dtype=float))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.ndim != 1 or values.size != ndim:
        raise InputError(f"spacing: expected {ndim} values (one per axis), got {values.size}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise InputError(f"spacing: expected finite positive values, got {values.tolist()}")
    return values
