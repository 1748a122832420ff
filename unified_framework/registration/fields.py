"""Displacement fields: the one convention every registration method returns.

Convention
----------
A field ``u`` lives on the grid of the **fixed** volume. It is a float32 array of shape
``(3, z, y, x)``; its components are ``(u_z, u_y, u_x)`` in **micrometres** (physical
units, the same axis order as the volume). It maps a fixed position to the moving
volume: the warped moving volume is

    warped(p) = moving(p + u(p)),   p = index * spacing   (micrometres)

which is ITK's convention for a ``DisplacementFieldTransform`` (a transform maps points
of the fixed/output space into the moving/input space). :func:`save_field` writes it as
an ITK vector image (``.mha``/``.nrrd``/``.nii.gz``) with components ``(x, y, z)``,
spacing in micrometres, origin 0 and identity direction, so that::

    sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage("field.mha"), sitk.sitkVectorFloat64))

resamples the moving volume exactly like :func:`warp`. Tools that assume millimetres
(ANTs, 3D Slicer) read the numbers as they are; scale spacing and vectors by 1e-3
together if they must be in mm.

Where geometry enters
---------------------
All volumes here are on grids with origin 0 and axes along ``(z, y, x)``;
:func:`grid_image` is the single place that turns an array plus spacing into a
SimpleITK image (and :func:`physical_grid` the single place that gives positions), so
that world affines (origin, direction) can be added there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.volume import is_lazy
from ..utils.atomic import atomic_path

logger = logging.getLogger(__name__)

#: Suffixes :func:`save_field` writes (SimpleITK image formats that hold vector images).
FIELD_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nii", ".nii.gz")

#: Spacings of fixed and moving volumes that differ by more than this factor are refused.
MAX_SPACING_RATIO = 4.0


def physical_grid(
    shape: Sequence[int], spacing: Sequence[float], dtype: Any = np.float32
) -> np.ndarray:
    """Positions of all voxel centres in micrometres, shape ``(3, z, y, x)``.

    Examples
    --------
    >>> physical_grid((2, 1, 1), (5.0, 1.0, 1.0))[0].ravel().tolist()
    [0.0, 5.0]
    """
    axes = [np.arange(n, dtype=dtype) * np.dtype(dtype).type(s) for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def grid_image(array: np.ndarray, spacing: Sequence[float], vector: bool = False) -> Any:
    """A SimpleITK image of ``array`` (``(z, y, x)`` or ``(z, y, x, 3)``) on the volume grid.

    The one place where the grid's geometry (spacing now; origin and direction when the
    volumes carry a world affine) is handed to ITK.

    Examples
    --------
    >>> grid_image(np.zeros((2, 3, 4), np.float32), (5.0, 2.0, 1.0)).GetSpacing()
    (1.0, 2.0, 5.0)
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)
    image.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    image.SetOrigin((0.0, 0.0, 0.0))
    return image


def check_field(field: Any, shape: Sequence[int] | None = None, name: str = "field") -> np.ndarray:
    """Return ``field`` as a finite float32 ``(3, z, y, x)`` array, or raise :class:`InputError`.

    Parameters
    ----------
    field : array-like
        The displacement field.
    shape : sequence of int, optional
        The grid it must have (the fixed volume's shape).
    name : str
        How to call it in messages (its file name).

    Examples
    --------
    >>> check_field(np.zeros((3, 2, 2, 2))).dtype
    dtype('float32')
    """
    array = np.asarray(
        field.detach().cpu().numpy() if hasattr(field, "detach") else field, dtype=np.float32
    )
    if array.ndim != 4 or array.shape[0] != 3:
        raise InputError(f"{name}: shape {array.shape}; expected a displacement field (3, z, y, x)")
    if shape is not None and tuple(array.shape[1:]) != tuple(int(n) for n in shape):
        raise InputError(
            f"{name}: grid {array.shape[1:]} does not match the volume's shape {tuple(shape)}; expected the field of this volume's grid"
        )
    if not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or infinite displacements; expected finite numbers")
    return array


def _coordinates(
    field: np.ndarray, spacing: Sequence[float], offset: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """Sampling positions in moving voxel indices: ``index + u / spacing``."""
    shape = field.shape[1:]
    coords = np.empty(field.shape, dtype=np.float32)
    for axis in range(3):
        index = np.arange(offset[axis], offset[axis] + shape[axis], dtype=np.float32)
        index = index.reshape([-1 if a == axis else 1 for a in range(3)])
        coords[axis] = index + field[axis] / np.float32(spacing[axis])
    return coords


def warp(
    moving: Any,
    field: Any,
    spacing: Sequence[float],
    interpolation: str = "linear",
    fill: str = "nearest",
) -> np.ndarray:
    """Warp ``moving`` with a displacement field (``warped(p) = moving(p + u(p))``).

    Parameters
    ----------
    moving : array-like ``(z, y, x)``
        The moving volume, already on the fixed grid (same shape as the field).
    field : array-like ``(3, z, y, x)``
        Displacements in micrometres (see the module's convention).
    spacing : sequence of 3 float
        Voxel size in micrometres.
    interpolation : {"linear", "nearest"}
        ``linear`` for images, ``nearest`` for label volumes (keeps the label values).
    fill : {"nearest", "constant"}
        Outside the moving volume: repeat the border voxel or use 0 (ITK's default).

    Returns
    -------
    numpy.ndarray
        The warped volume, float32 for ``linear``, ``moving``'s dtype for ``nearest``.

    Examples
    --------
    >>> moving = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> shift = np.zeros((3, 2, 2, 2), np.float32); shift[2] = 1.0   # one voxel along x
    >>> warp(moving, shift, (1, 1, 1))[0, 0].tolist()
    [1.0, 1.0]
    """
    if interpolation not in ("linear", "nearest"):
        raise InputError(f"interpolation {interpolation!r}; expected 'linear' or 'nearest'")
    if fill not in ("nearest", "constant"):
        raise InputError(f"fill {fill!r}; expected 'nearest' or 'constant'")
    moving = np.asarray(moving)
    field = check_field(field, moving.shape)
    coords = _coordinates(field, spacing)
    return _sample(moving, coords, interpolation, fill)


def _sample(moving: np.ndarray, coords: np.ndarray, interpolation: str, fill: str) -> np.ndarray:
    order = 1 if interpolation == "linear" else 0
    source = moving.astype(np.float32, copy=False) if order else moving
    if order == 0:
        # map_coordinates with order 0 rounds half away from zero inconsistently across
        # SciPy versions; round ourselves so labels follow the nearest voxel centre.
        coords = np.floor(coords + 0.5)
    out = ndimage.map_coordinates(
        source,
        coords,
        order=order,
        mode="nearest" if fill == "nearest" else "constant",
        cval=0.0,
        prefilter=False,
    )
    return out.astype(np.float32 if order else moving.dtype, copy=False)


def affine_field(matrix: np.ndarray, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The displacement field of an affine map ``p -> A p + t`` (``matrix`` 4x4, ``(z, y, x)`` µm).

    Examples
    --------
    >>> m = np.eye(4); m[2, 3] = 2.5
    >>> float(affine_field(m, (2, 2, 2), (1, 1, 1))[2].max())
    2.5
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise InputError(f"affine matrix has shape {matrix.shape}; expected 4x4")
    grid = physical_grid(shape, spacing, np.float64)
    mapped = np.tensordot(matrix[:3, :3], grid, axes=(1, 0)) + matrix[:3, 3].reshape(3, 1, 1, 1)
    return (mapped - grid).astype(np.float32)


def compose(first: Any, second: Any, spacing: Sequence[float]) -> np.ndarray:
    """The field of "``second`` then ``first``" as one field: ``v(p) = u2(p) + u1(p + u2(p))``.

    With ``first`` the affine pre-alignment (see :func:`affine_field`) and ``second`` the
    deformable field estimated on the pre-aligned moving volume, the result maps the
    fixed volume straight into the original moving one.

    Examples
    --------
    >>> a = np.ones((3, 2, 2, 2), np.float32); b = 2 * a
    >>> float(compose(a, b, (1, 1, 1)).max())
    3.0
    """
    second = check_field(second, name="second field")
    first = check_field(first, second.shape[1:], "first field")
    coords = _coordinates(second, spacing)
    sampled = np.stack(
        [
            ndimage.map_coordinates(first[c], coords, order=1, mode="nearest", prefilter=False)
            for c in range(3)
        ]
    )
    return (second + sampled).astype(np.float32)


def invert(field: Any, spacing: Sequence[float], iterations: int = 20) -> np.ndarray:
    """Approximate inverse by fixed-point iteration ``w(p) = -u(p + w(p))``.

    Converges for smooth fields without folding (``|grad u| < 1``); the residual
    ``|u(p + w(p)) + w(p)|`` is logged.

    Examples
    --------
    >>> u = np.full((3, 4, 4, 4), 0.5, np.float32)
    >>> float(invert(u, (1, 1, 1)).mean())
    -0.5
    """
    field = check_field(field)
    inverse = -field.copy()
    for _ in range(max(1, int(iterations))):
        coords = _coordinates(inverse, spacing)
        sampled = np.stack(
            [
                ndimage.map_coordinates(field[c], coords, order=1, mode="nearest", prefilter=False)
                for c in range(3)
            ]
        )
        inverse = -sampled
    residual = float(np.abs(compose(field, inverse, spacing)).max())
    logger.info("inverse field: largest residual %.3g um after %d iterations", residual, iterations)
    return inverse.astype(np.float32)


def resample_field(
    field: Any, shape: Sequence[int], spacing: Sequence[float], field_spacing: Sequence[float]
) -> np.ndarray:
    """Upsample (or downsample) a field to another grid of the same extent, linearly.

    Displacements are in micrometres, so the values stay as they are; only the grid
    changes. Grid positions map by physical position (voxel ``i`` at ``i * spacing``).

    Examples
    --------
    >>> u = np.ones((3, 2, 2, 2), np.float32)
    >>> resample_field(u, (4, 4, 4), (1, 1, 1), (2, 2, 2)).shape
    (3, 4, 4, 4)
    """
    field = check_field(field)
    coords = [
        np.arange(n, dtype=np.float32) * np.float32(s / fs)
        for n, s, fs in zip(shape, spacing, field_spacing)
    ]
    return np.stack([_separable_linear(field[c], coords) for c in range(3)]).astype(np.float32)


def _separable_linear(values: np.ndarray, coords: Sequence[np.ndarray]) -> np.ndarray:
    """Sample ``values`` at the outer product of per-axis positions (linear, clamped)."""
    out = values
    for axis, position in enumerate(coords):
        n = out.shape[axis]
        position = np.clip(position, 0, n - 1)
        left = np.minimum(np.floor(position).astype(np.intp), max(n - 2, 0))
        frac = (position - left).astype(np.float32) if n > 1 else np.zeros_like(position)
        right = np.minimum(left + 1, n - 1)
        shape = [-1 if a == axis else 1 for a in range(out.ndim)]
        out = np.take(out, left, axis=axis) * (1 - frac).reshape(shape) + np.take(
            out, right, axis=axis
        ) * frac.reshape(shape)
    return out


def warp_lazy(
    moving: Any,
    field: Any,
    spacing: Sequence[float],
    field_spacing: Sequence[float],
    interpolation: str = "linear",
    chunks: int = 64,
) -> Any:
    """Warp a volume larger than memory block by block (a dask array out).

    The field may be coarser than the volume (estimated on a binned copy); each output
    block upsamples only its part of the field, finds the box of the moving volume that
    part reaches and reads only that box. Memory per block is bounded by the block, its
    field and the box the field reaches, whatever the size of the volume.

    Parameters
    ----------
    moving : numpy or dask array ``(z, y, x)``
        The moving volume on the fixed grid (e.g. ``open_volume(...).data``).
    field : array-like ``(3, z', y', x')``
        Displacements in micrometres on a grid of the same extent with ``field_spacing``.
    spacing, field_spacing : sequence of 3 float
        Voxel sizes of the volume and of the field grid, micrometres.
    interpolation : {"linear", "nearest"}
    chunks : int
        Edge of the output blocks (writers go one row of blocks at a time, so this
        also sets the slab held in memory: 64 x side² voxels).

    Returns
    -------
    dask.array.Array
        The warped volume; write it with :func:`unified_framework.io.write_volume`.

    Examples
    --------
    >>> import dask.array as da
    >>> out = warp_lazy(da.ones((8, 8, 8), chunks=4), np.zeros((3, 2, 2, 2)), (1, 1, 1), (4, 4, 4))
    >>> float(out.compute().mean())
    1.0
    """
    import dask.array as da

    if interpolation not in ("linear", "nearest"):
        raise InputError(f"interpolation {interpolation!r}; expected 'linear' or 'nearest'")
    field = check_field(field)
    expected = tuple(
        max(1, math.ceil(n * s / fs - 1e-6))
        for n, s, fs in zip(moving.shape, spacing, field_spacing)
    )
    if any(abs(a - b) > 1 for a, b in zip(field.shape[1:], expected)):
        raise InputError(
            f"field grid {field.shape[1:]} at spacing {tuple(field_spacing)} does not cover the volume {tuple(moving.shape)} at spacing {tuple(spacing)}"
        )
    out_dtype = np.float32 if interpolation == "linear" else np.dtype(moving.dtype)
    template = da.zeros(moving.shape, chunks=chunks, dtype=out_dtype)

    def block(_: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        assert block_info is not None
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        coords = [
            np.arange(a, b, dtype=np.float32) * np.float32(s / fs)
            for (a, b), s, fs in zip(((z0, z1), (y0, y1), (x0, x1)), spacing, field_spacing)
        ]
        local = np.stack([_separable_linear(field[c], coords) for c in range(3)])
        sample = _coordinates(local, spacing, (z0, y0, x0))
        lo = [max(0, int(math.floor(sample[a].min())) - 1) for a in range(3)]
        hi = [min(moving.shape[a], int(math.ceil(sample[a].max())) + 2) for a in range(3)]
        lo = [min(lo[a], hi[a] - 1) for a in range(3)]
        box = moving[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        box = np.asarray(box.compute() if is_lazy(box) else box)
        for a in range(3):
            sample[a] -= lo[a]
        return _sample(box, sample, interpolation, "nearest")

    return template.map_blocks(block, dtype=out_dtype)


def save_field(path: str | Path, field: Any, spacing: Sequence[float]) -> Path:
    """Write a field as an ITK displacement-field image (see the module's convention).

    Parameters
    ----------
    path : path-like
        ``.mha`` (recommended), ``.mhd``, ``.nrrd``, ``.nii`` or ``.nii.gz``. Written
        through a temporary file and a rename.
    field : array-like ``(3, z, y, x)``
        Displacements in micrometres.
    spacing : sequence of 3 float
        Voxel size of the fixed grid in micrometres.

    Examples
    --------
    >>> save_field(tmp_path / "field.mha", np.zeros((3, 4, 4, 4)), (1, 1, 1))  # doctest: +SKIP
    """
    import SimpleITK as sitk

    path = Path(path)
    if not str(path).lower().endswith(FIELD_SUFFIXES):
        raise InputError(
            f"{path}: a field is written as {', '.join(FIELD_SUFFIXES)}; choose one of these suffixes"
        )
    field = check_field(field)
    # ITK orders vector components like its axes, (x, y, z): reverse ours.
    image = grid_image(np.moveaxis(field[::-1], 0, -1).astype(np.float64), spacing, vector=True)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def load_field(
    path: str | Path, shape: Sequence[int] | None = None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a field written by :func:`save_field` (or any 3D ITK displacement field).

    Parameters
    ----------
    path : path-like
        The field image.
    shape : sequence of int, optional
        The grid the field must have; a different one raises :class:`InputError`.

    Returns
    -------
    field : numpy.ndarray ``(3, z, y, x)`` float32, micrometres
    spacing : tuple of 3 float, micrometres ``(z, y, x)``

    Examples
    --------
    >>> field, spacing = load_field("field.mha")  # doctest: +SKIP
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such field file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(
            f"{path}: not a readable ITK image ({str(exc).strip().splitlines()[-1][:120]})"
        ) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 3:
        raise InputError(
            f"{path}: a {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} component(s) per voxel; "
            "expected a 3D displacement field with 3 components"
        )
    if not np.allclose(image.GetDirection(), np.eye(3).ravel()) or not np.allclose(
        image.GetOrigin(), 0
    ):
        raise InputError(
            f"{path}: field with origin {image.GetOrigin()} and a rotated direction; expected origin 0 and axis-aligned (see docs/registration.md)"
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x, 3) with components (x, y, z)
    field = np.ascontiguousarray(np.moveaxis(array, -1, 0)[::-1], dtype=np.float32)
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    return check_field(field, shape, str(path)), spacing  # type: ignore[return-value]


def to_fixed_grid(
    moving: np.ndarray,
    moving_spacing: Sequence[float],
    fixed_shape: Sequence[int],
    fixed_spacing: Sequence[float],
    interpolation: str = "linear",
    name: str = "moving",
) -> np.ndarray:
    """Resample ``moving`` onto the fixed grid (identity map, physical positions).

    Registration methods compare voxel by voxel, so both volumes must share one grid.
    Identical grids are returned as they are; spacings more than
    :data:`MAX_SPACING_RATIO` apart are refused (rescale first, e.g. ``--bin``).

    Examples
    --------
    >>> to_fixed_grid(np.ones((4, 4, 4)), (2, 2, 2), (8, 8, 8), (1, 1, 1)).shape
    (8, 8, 8)
    """
    import SimpleITK as sitk

    moving = np.asarray(moving)
    if moving.ndim != 3 or len(fixed_shape) != 3:
        raise InputError(
            f"{name}: has {moving.ndim} dimensions and the fixed volume {len(fixed_shape)}; expected two 3D volumes"
        )
    ratios = [m / f for m, f in zip(moving_spacing, fixed_spacing)]
    if max(max(ratios), 1 / min(ratios)) > MAX_SPACING_RATIO:
        raise InputError(
            f"{name}: voxel size {tuple(moving_spacing)} um differs from the fixed volume's {tuple(fixed_spacing)} um by more "
            f"than {MAX_SPACING_RATIO:g}x; expected similar resolutions (bin the finer volume first)"
        )
    if tuple(moving.shape) == tuple(fixed_shape) and np.allclose(moving_spacing, fixed_spacing):
        return moving
    logger.warning(
        "%s: resampling %s at %s um onto the fixed grid %s at %s um",
        name,
        moving.shape,
        tuple(moving_spacing),
        tuple(fixed_shape),
        tuple(fixed_spacing),
    )
    source = grid_image(
        moving.astype(np.float32) if interpolation == "linear" else moving, moving_spacing
    )
    reference = grid_image(np.zeros(tuple(fixed_shape), np.uint8), fixed_spacing)
    method = sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor
    out = sitk.Resample(source, reference, sitk.Transform(), method, 0.0)
    return sitk.GetArrayFromImage(out)
