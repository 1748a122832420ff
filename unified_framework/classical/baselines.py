"""Multi-Otsu thresholding and marker-controlled watershed over intensity classes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage import filters, segmentation

from ..errors import InputError

logger = logging.getLogger(__name__)

MAX_CLASSES = 16


def _check_image(image, name: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise InputError(f"{name}: expected a 2D or 3D grey-value image, got shape {array.shape}")
    if not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
        or array.dtype == bool
    ):
        raise InputError(f"{name}: expected numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return array


def _check_classes(classes: int) -> int:
    if (
        isinstance(classes, bool)
        or not isinstance(classes, (int, np.integer))
        or not 2 <= classes <= MAX_CLASSES
    ):
        raise InputError(f"classes: expected an integer from 2 to {MAX_CLASSES}, got {classes!r}")
    return int(classes)


def _smoothed(image: np.ndarray, smoothing: float) -> np.ndarray:
    if not np.isfinite(smoothing) or smoothing < 0:
        raise InputError(f"smoothing: expected a Gaussian sigma >= 0 (voxels), got {smoothing!r}")
    data = image.astype(np.float32, copy=False)
    return ndimage.gaussian_filter(data, float(smoothing)) if smoothing > 0 else data


def _thresholds(data: np.ndarray, classes: int, nbins: int | None, name: str) -> np.ndarray:
    # A histogram of the whole volume is cheap; skimage's exhaustive search then costs
    # about nbins**(classes-1), so fewer bins for more classes keep it under a second.
    if nbins is None:
        nbins = {2: 256, 3: 256, 4: 256, 5: 128}.get(classes, 64)
    low, high = float(data.min()), float(data.max())
    if low == high:
        raise InputError(f"{name}: is constant ({low}); cannot split it into {classes} classes")
    counts, edges = np.histogram(data, bins=nbins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    if np.count_nonzero(counts) < classes:
        raise InputError(
            f"{name}: has fewer than {classes} distinct grey levels; cannot split it into {classes} classes"
        )
    try:
        return filters.threshold_multiotsu(classes=classes, hist=(counts, centres))
    except ValueError as exc:
        raise InputError(f"{name}: multi-Otsu failed ({exc})") from None


def multi_otsu(
    image, classes: int = 3, smoothing: float = 0.0, nbins: int | None = None, name: str = "image"
) -> np.ndarray:
    """Split an image into intensity classes at the multi-Otsu thresholds.

    Parameters
    ----------
    image : array_like
        2D or 3D grey-value image.
    classes : int
        Number of classes (2 to 16).
    smoothing : float
        Sigma (voxels) of a Gaussian filter applied first; reduces noise speckle.
    nbins : int, optional
        Histogram bins of the threshold search (default: 256 up to 4 classes, fewer
        above, where the exhaustive search would take long).
    name : str
        How to call the image in error messages (its file name).

    Returns
    -------
    numpy.ndarray of uint8
        Labels ``0 .. classes-1``, darkest class first, same shape as ``image``.

    Raises
    ------
    InputError
        For non-numeric, non-finite, constant images or bad parameters.
    """
    classes = _check_classes(classes)
    data = _smoothed(_check_image(image, name), smoothing)
    thresholds = _thresholds(data, classes, nbins, name)
    logger.debug("multi-Otsu thresholds of %s: %s", name, thresholds)
    return np.digitize(data, bins=thresholds).astype(np.uint8)


def watershed_classes(
    image,
    classes: int = 3,
    smoothing: float = 1.0,
    marker_fraction: float = 0.5,
    nbins: int | None = None,
    name: str = "image",
) -> np.ndarray:
    """Marker-controlled watershed of intensity classes.

    Seeds are the voxels whose smoothed value lies in the central ``marker_fraction``
    of each multi-Otsu class interval, i.e. confidently inside one class; the watershed
    of the gradient magnitude then decides the uncertain voxels near boundaries, which
    keeps thin layers (e.g. a degradation layer around an implant) connected where plain
    thresholding speckles.

    Parameters
    ----------
    image : array_like
        2D or 3D grey-value image.
    classes : int
        Number of classes (2 to 16).
    smoothing : float
        Gaussian sigma (voxels) before seeding and gradient computation.
    marker_fraction : float
        Share (0, 1] of each class's intensity interval whose voxels become seeds.
    nbins : int, optional
        Histogram bins of the multi-Otsu threshold search (see :func:`multi_otsu`).
    name : str
        How to call the image in error messages.

    Returns
    -------
    numpy.ndarray of uint8
        Labels ``0 .. classes-1``, darkest class first.

    Raises
    ------
    InputError
        For bad images or parameters.
    """
    classes = _check_classes(classes)
    if not 0 < marker_fraction <= 1:
        raise InputError(f"marker_fraction: expected a value in (0, 1], got {marker_fraction!r}")
    data = _smoothed(_check_image(image, name), smoothing)
    thresholds = _thresholds(data, classes, nbins, name)
    # Outer classes are bounded by robust percentiles, not by outliers.
    low, high = np.percentile(data, [0.5, 99.5])
    bounds = np.concatenate([[min(low, thresholds[0])], thresholds, [max(high, thresholds[-1])]])
    markers = np.zeros(data.shape, dtype=np.int32)
    for label in range(classes):
        centre = (bounds[label] + bounds[label + 1]) / 2
        half = (bounds[label + 1] - bounds[label]) * marker_fraction / 2
        markers[(data >= centre - half) & (data <= centre + half)] = label + 1
    elevation = filters.sobel(data)
    labels = segmentation.watershed(elevation, markers)
    return (labels - 1).astype(np.uint8)


def relabel(labels: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Map intensity-ranked labels onto a dataset's class numbers.

    Parameters
    ----------
    labels : numpy.ndarray
        Output of :func:`multi_otsu` or :func:`watershed_classes` (``0 .. n-1``).
    order : sequence of int
        ``order[rank]`` is the class number of the ``rank``-th darkest class, e.g.
        ``[0, 1, 3, 2]`` when class 3 is darker than class 2.

    Returns
    -------
    numpy.ndarray of uint8

    Raises
    ------
    InputError
        If ``order`` is too short for the labels present or holds invalid numbers.
    """
    lut = np.asarray(list(order))
    if (
        lut.ndim != 1
        or lut.size == 0
        or not np.issubdtype(lut.dtype, np.integer)
        or lut.min() < 0
        or lut.max() > 255
    ):
        raise InputError(f"label order: expected class numbers from 0 to 255, got {list(order)!r}")
    top = int(labels.max()) if labels.size else 0
    if top >= lut.size:
        raise InputError(
            f"label order: gives {lut.size} classes but the segmentation has {top + 1}"
        )
    return lut.astype(np.uint8)[labels]


def majority_order(labels: np.ndarray, truth: np.ndarray, classes: int) -> list[int]:
    """Class number per intensity rank by majority vote against ground truth.

    The usual way to score an unsupervised method: each intensity class is named after
    the ground-truth class most of its voxels belong to. It uses the ground truth, so
    report it as such (the dashboard labels these rows "order from ground truth").

    Parameters
    ----------
    labels : numpy.ndarray
        Intensity-ranked labels ``0 .. classes-1``.
    truth : numpy.ndarray
        Ground-truth labels of the same shape.
    classes : int
        Number of intensity classes.

    Returns
    -------
    list of int
        ``order[rank]``, for :func:`relabel`; an empty rank maps to 0.
    """
    labels = np.asarray(labels)
    truth = np.asarray(truth)
    if labels.shape != truth.shape:
        raise InputError(
            f"ground truth: shape {truth.shape} does not match the segmentation {labels.shape}"
        )
    if truth.size and (truth.min() < 0 or not np.issubdtype(truth.dtype, np.integer)):
        raise InputError(
            f"ground truth: expected non-negative integer labels, got dtype {truth.dtype}"
        )
    n_truth = int(truth.max()) + 1 if truth.size else 1
    counts = np.bincount(
        labels.astype(np.int64).ravel() * n_truth + truth.astype(np.int64).ravel(),
        minlength=classes * n_truth,
    ).reshape(-1, n_truth)[:classes]
    return [int(np.argmax(row)) if row.any() else 0 for row in counts]


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "multi-otsu": multi_otsu,
    "watershed": watershed_classes,
}


def segment(
    image,
    method: str,
    classes: int = 3,
    smoothing: float | None = None,
    order: Sequence[int] | None = None,
    name: str = "image",
) -> np.ndarray:
    """Run a classical method by name and optionally map its classes with :func:`relabel`.

    Parameters
    ----------
    image : array_like
        2D or 3D grey-value image.
    method : {"multi-otsu", "watershed"}
    classes : int
        Number of intensity classes.
    smoothing : float, optional
        Gaussian sigma; default: the method's own default.
    order : sequence of int, optional
        Class number per intensity rank (see :func:`relabel`).
    name : str
        How to call the image in error messages.

    Returns
    -------
    numpy.ndarray of uint8
    """
    if method not in METHODS:
        raise InputError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    if order is not None and len(order) != classes:
        raise InputError(
            f"label order: expected {classes} class numbers (one per intensity class), got {len(order)}"
        )
    kwargs = {} if smoothing is None else {"smoothing": float(smoothing)}
    labels = METHODS[method](image, classes=classes, name=name, **kwargs)
    return labels if order is None else relabel(labels, order)
