"""Rigid or affine pre-alignment with SimpleITK (Mattes mutual information, multi-resolution).

The result is a 4x4 matrix in ``(z, y, x)`` micrometres that maps a fixed position to
the moving volume (``p -> A p + t``, the same direction as the displacement fields of
:mod:`.fields`), so :func:`~.fields.affine_field` turns it into a field and
:func:`~.fields.compose` chains it with a deformable one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .fields import affine_field, grid_image

logger = logging.getLogger(__name__)


#: Volumes of at most this many voxels are registered with every voxel in the metric.
#: A random fifth of a small volume is a few ten thousand voxels, few enough that
#: the draw (and ITK's per-thread sums of it) could stop the optimiser early.
FULL_SAMPLING_VOXELS = 2**20

#: Pyramid levels that would shrink a side below this many voxels are skipped.
MIN_LEVEL_SIDE = 8


@dataclass
class AffineResult:
    """Outcome of :func:`register_affine`.

    Attributes
    ----------
    matrix : numpy.ndarray
        4x4 map fixed -> moving in ``(z, y, x)`` micrometres.
    metric : float
        Final Mattes mutual information (negative; lower is better).
    iterations : int
        Optimiser iterations at the finest level.
    """

    matrix: np.ndarray
    metric: float
    iterations: int

    def field(self, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
        """The matrix as a displacement field on a grid (see :func:`~.fields.affine_field`)."""
        return affine_field(self.matrix, shape, spacing)


def register_affine(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float],
    kind: str = "affine",
    bins: int = 50,
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
    iterations: int = 200,
    sampling: float | None = None,
    seed: int = 0,
) -> AffineResult:
    """Find the rigid or affine map that aligns ``moving`` to ``fixed``.

    Parameters
    ----------
    fixed, moving : numpy.ndarray ``(z, y, x)``
        Both on the same grid (see :func:`~.fields.to_fixed_grid`).
    spacing : sequence of 3 float
        Voxel size in micrometres.
    kind : {"rigid", "affine"}
        Rotation + translation, or a general affine map (scaling, shear).
    bins : int
        Histogram bins of Mattes mutual information (works across modalities).
    shrink_factors, smoothing_sigmas : sequences
        The resolution pyramid: shrink factor and Gaussian sigma (voxels) per level.
        Levels that leave a side shorter than :data:`MIN_LEVEL_SIDE` voxels are skipped.
    iterations : int
        Maximum optimiser iterations per level.
    sampling : float, optional
        Share of voxels sampled for the metric (random, seeded). Default: every voxel
        for volumes of at most :data:`FULL_SAMPLING_VOXELS` (the metric, and so the
        result, then does not depend on which voxels a random draw picked), else 0.2.
    seed : int
        Seed of the metric sampling.

    Returns
    -------
    AffineResult

    Examples
    --------
    >>> from unified_framework.data import make_implant_phantom
    >>> image, _ = make_implant_phantom((32, 32, 32))
    >>> result = register_affine(image, image, (5, 5, 5), kind="rigid", iterations=5)
    >>> bool(np.abs(result.matrix[:3, 3]).max() < 1.0)   # micrometres: well below a 5 um voxel
    True
    """
    import SimpleITK as sitk

    if kind not in ("rigid", "affine"):
        raise InputError(f"affine: kind {kind!r}; expected 'rigid' or 'affine'")
    if len(shrink_factors) != len(smoothing_sigmas):
        raise InputError(
            "affine: shrink_factors and smoothing_sigmas need one value per level each"
        )
    # A level that shrinks a side below MIN_LEVEL_SIDE voxels (4 slices of a 16-slice
    # scan at shrink 4, blurred by sigma 2) has no structure left along that side
    # and can start the finer levels in a wrong optimum: drop such levels.
    levels = [
        (int(f), float(s))
        for f, s in zip(shrink_factors, smoothing_sigmas)
        if min(np.shape(fixed)) // int(f) >= MIN_LEVEL_SIDE or int(f) == 1
    ] or [(1, 0.0)]
    shrink_factors, smoothing_sigmas = [f for f, _ in levels], [s for _, s in levels]
    fixed_image = grid_image(np.asarray(fixed, dtype=np.float32), spacing)
    moving_image = grid_image(np.asarray(moving, dtype=np.float32), spacing)
    base = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    initial = sitk.CenteredTransformInitializer(
        fixed_image, moving_image, base, sitk.CenteredTransformInitializerFilter.GEOMETRY
    )

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    if sampling is None:
        sampling = 1.0 if np.asarray(fixed).size <= FULL_SAMPLING_VOXELS else 0.2
    if sampling >= 1.0:
        method.SetMetricSamplingStrategy(method.NONE)
    else:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(float(sampling), int(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-4,
        numberOfIterations=int(iterations),
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    # Rotations (radians) and translations (micrometres) differ by orders of magnitude.
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([int(f) for f in shrink_factors])
    method.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_sigmas])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    try:
        transform = method.Execute(fixed_image, moving_image)
    except RuntimeError as exc:
        raise InputError(
            f"affine registration failed: {str(exc).strip().splitlines()[-1][:160]} (do the volumes overlap?)"
        ) from None
    logger.info(
        "affine (%s): %s after %d iterations, metric %.4f",
        kind,
        method.GetOptimizerStopConditionDescription(),
        method.GetOptimizerIteration(),
        method.GetMetricValue(),
    )
    return AffineResult(
        transform_matrix(transform),
        float(method.GetMetricValue()),
        int(method.GetOptimizerIteration()),
    )


def transform_matrix(transform: Any) -> np.ndarray:
    """4x4 ``(z, y, x)`` matrix of a SimpleITK affine-like transform (which works in ``(x, y, z)``).

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> transform_matrix(sitk.TranslationTransform(3, (1.0, 2.0, 3.0)))[:3, 3].tolist()
    [3.0, 2.0, 1.0]
    """
    dim = 3
    # Evaluate the transform on the origin and unit vectors: works for every
    # (composite, Euler, affine, translation) transform without knowing its type.
    origin = np.asarray(transform.TransformPoint((0.0,) * dim))
    columns = [
        np.asarray(transform.TransformPoint(tuple(np.eye(dim)[i]))) - origin for i in range(dim)
    ]
    linear_xyz = np.stack(columns, axis=1)
    flip = np.eye(dim)[::-1]  # (x, y, z) <-> (z, y, x)
    matrix = np.eye(4)
    matrix[:3, :3] = flip @ linear_xyz @ flip
    matrix[:3, 3] = origin[::-1]
    return matrix
