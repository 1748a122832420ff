"""Displacement fields: the one convention every registration method returns.

Convention
----------
A field ``u`` lives on the grid of the **fixed** volume. In memory it is a float32
array of shape ``(3, z, y, x)`` whose components are displacements in **micrometres**
along the fixed grid's own index axes ``(z, y, x)`` (the "grid frame"). With the fixed
volume's world geometry (``origin`` and ``direction`` of
:class:`~unified_framework.io.Volume`, LPS world, see ``docs/io.md``) a fixed voxel
``i`` sits at the world position ``p = origin + direction @ (i * spacing)`` and its
world displacement is ``direction @ u``. The warped moving volume is

    warped(p) = moving(p + direction @ u(p))      (world positions, micrometres)

where ``moving`` is read at world positions through its *own* geometry, so the two
volumes may have different origins, directions and voxel sizes. This is ITK's
convention for a ``DisplacementFieldTransform`` (a transform maps points of the
fixed/output space into the moving/input space). :func:`save_field` writes it as an
ITK vector image (``.mha``/``.nrrd``/``.nii.gz``) on the fixed grid -- spacing, origin
and direction of the fixed volume -- with the *world* displacement components
``(x, y, z)`` (LPS) in micrometres, so that::

    sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage("field.mha"), sitk.sitkVectorFloat64))

resamples the moving volume (as an ITK image with its own geometry) exactly like
:func:`warp`. Tools that assume millimetres (ANTs, 3D Slicer) read the numbers as they
are; scale spacing, origin and vectors by 1e-3 together if they must be in mm.

Where geometry enters
---------------------
:func:`grid_image` is the single place that turns an array plus spacing, origin and
direction into a SimpleITK image, :func:`world_frame` the single place that maps grid
frame positions to the world, and :func:`moving_index_map` the map from grid frame
positions (``index * spacing + u``) to voxel indices of a moving volume anywhere in the
world. The methods themselves work on one shared grid: the moving volume is first
resampled into the fixed volume's world grid (:func:`to_fixed_grid`).
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


def grid_image(
    array: np.ndarray,
    spacing: Sequence[float],
    vector: bool = False,
    origin: Sequence[float] | None = None,
    direction: Any = None,
) -> Any:
    """A SimpleITK image of ``array`` (``(z, y, x)`` or ``(z, y, x, 3)``) on the volume grid.

    The one place where a grid's geometry is handed to ITK: ``spacing``, ``origin``
    (µm, ``(z, y, x)``) and ``direction`` (3x3, rows world ``z, y, x``, columns index
    axes ``z, y, x``, as :attr:`unified_framework.io.Volume.direction`) are reversed
    into ITK's ``(x, y, z)`` order. Default: origin 0, identity direction.

    Examples
    --------
    >>> grid_image(np.zeros((2, 3, 4), np.float32), (5.0, 2.0, 1.0)).GetSpacing()
    (1.0, 2.0, 5.0)
    >>> grid_image(np.zeros((2, 3, 4), np.float32), (1, 1, 1), origin=(3, 2, 1)).GetOrigin()
    (1.0, 2.0, 3.0)
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)
    image.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    image.SetOrigin(tuple(float(v) for v in reversed(tuple(origin or (0.0, 0.0, 0.0)))))
    if direction is not None:
        itk = np.asarray(direction, dtype=np.float64)[::-1, ::-1]
        image.SetDirection(tuple(float(v) for v in itk.ravel()))
    return image


def image_geometry(image: Any) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """``(spacing, origin, direction)`` of a 3D SimpleITK image in our ``(z, y, x)`` order.

    The inverse of :func:`grid_image`'s geometry.

    Examples
    --------
    >>> spacing, origin, direction = image_geometry(grid_image(np.zeros((2, 3, 4)), (5, 2, 1), origin=(3, 2, 1)))
    >>> spacing, origin
    ((5.0, 2.0, 1.0), (3.0, 2.0, 1.0))
    """
    spacing = tuple(float(v) for v in reversed(image.GetSpacing()))
    origin = tuple(float(v) for v in reversed(image.GetOrigin()))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[::-1, ::-1]
    return spacing, origin, np.ascontiguousarray(direction)


def world_frame(origin: Sequence[float] | None = None, direction: Any = None) -> np.ndarray:
    """4x4 map from grid frame positions (``index * spacing``, µm) to world positions.

    ``world = origin + direction @ position``; origin 0 and identity direction give the
    identity (the grid frame is then the world).

    Examples
    --------
    >>> world_frame((10.0, 0.0, 0.0))[:3, 3].tolist()
    [10.0, 0.0, 0.0]
    """
    frame = np.eye(4)
    if direction is not None:
        frame[:3, :3] = np.asarray(direction, dtype=np.float64)
    if origin is not None:
        frame[:3, 3] = np.asarray(origin, dtype=np.float64)
    return frame


def is_identity_frame(origin: Sequence[float] | None = None, direction: Any = None) -> bool:
    """True if the grid frame is the world (origin 0, identity direction).

    Examples
    --------
    >>> is_identity_frame((0, 0, 0), np.eye(3)), is_identity_frame((1, 0, 0), None)
    (True, False)
    """
    return bool(np.allclose(world_frame(origin, direction), np.eye(4), atol=1e-9))


def moving_index_map(
    moving_affine: Any, origin: Sequence[float] | None = None, direction: Any = None
) -> np.ndarray:
    """4x4 map from the fixed grid frame (µm, ``index * spacing + u``) to moving voxel indices.

    ``moving_affine`` is the moving volume's :attr:`~unified_framework.io.Volume.affine`
    (index -> world); ``origin``/``direction`` are the fixed volume's. A moving volume
    on the fixed grid gives ``diag(1 / spacing)``.

    Examples
    --------
    >>> np.diag(moving_index_map(np.diag([2.0, 4.0, 5.0, 1.0]))).tolist()
    [0.5, 0.25, 0.2, 1.0]
    """
    return np.linalg.inv(np.asarray(moving_affine, dtype=np.float64)) @ world_frame(
        origin, direction
    )


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
    field: np.ndarray,
    spacing: Sequence[float],
    offset: Sequence[int] = (0, 0, 0),
    to_moving: np.ndarray | None = None,
) -> np.ndarray:
    """Sampling positions in moving voxel indices.

    ``index + u / spacing`` when the moving volume is on the fixed grid (``to_moving``
    None), else ``to_moving @ (index * spacing + u)`` (see :func:`moving_index_map`).
    """
    shape = field.shape[1:]
    coords = np.empty(field.shape, dtype=np.float32)
    if to_moving is None:
        for axis in range(3):
            index = np.arange(offset[axis], offset[axis] + shape[axis], dtype=np.float32)
            index = index.reshape([-1 if a == axis else 1 for a in range(3)])
            coords[axis] = index + field[axis] / np.float32(spacing[axis])
        return coords
    matrix = np.asarray(to_moving, dtype=np.float64)
    positions = []
    for axis in range(3):
        index = np.arange(offset[axis], offset[axis] + shape[axis], dtype=np.float64)
        positions.append(
            (index * spacing[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
        )
    for row in range(3):
        # Linear in the grid position: the constant part is separable, add the field after.
        base = matrix[row, 3] + sum(matrix[row, a] * positions[a] for a in range(3))
        coords[row] = base + sum(
            np.float32(matrix[row, a]) * field[a] for a in range(3) if matrix[row, a] != 0
        )
    return coords


def warp(
    moving: Any,
    field: Any,
    spacing: Sequence[float],
    interpolation: str = "linear",
    fill: str = "nearest",
    to_moving: np.ndarray | None = None,
) -> np.ndarray:
    """Warp ``moving`` with a displacement field (``warped(p) = moving(p + u(p))``).

    Parameters
    ----------
    moving : array-like ``(z, y, x)``
        The moving volume: on the fixed grid (same shape as the field), or anywhere in
        the world with ``to_moving``.
    field : array-like ``(3, z, y, x)``
        Displacements in micrometres, grid frame (see the module's convention).
    spacing : sequence of 3 float
        Voxel size of the fixed grid in micrometres.
    interpolation : {"linear", "nearest"}
        ``linear`` for images, ``nearest`` for label volumes (keeps the label values).
    fill : {"nearest", "constant"}
        Outside the moving volume: repeat the border voxel or use 0 (ITK's default).
    to_moving : numpy.ndarray 4x4, optional
        :func:`moving_index_map` of a moving volume with its own geometry (the output
        is then on the field's grid, whatever the moving volume's shape).

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
    field = check_field(field, moving.shape if to_moving is None else None)
    coords = _coordinates(field, spacing, to_moving=to_moving)
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
    shape: Sequence[int] | None = None,
    to_moving: np.ndarray | None = None,
) -> Any:
    """Warp a volume larger than memory block by block (a dask array out).

    The field may be coarser than the volume (estimated on a binned copy); each output
    block upsamples only its part of the field, finds the box of the moving volume that
    part reaches and reads only that box. Memory per block is bounded by the block, its
    field and the box the field reaches, whatever the size of the volume.

    Parameters
    ----------
    moving : numpy or dask array ``(z, y, x)``
        The moving volume on the fixed grid (e.g. ``open_volume(...).data``), or
        anywhere in the world with ``to_moving``.
    field : array-like ``(3, z', y', x')``
        Displacements in micrometres (grid frame) on a grid of the same extent with
        ``field_spacing``.
    spacing, field_spacing : sequence of 3 float
        Voxel sizes of the output grid and of the field grid, micrometres (same origin
        and direction: the field grid is the output grid binned).
    interpolation : {"linear", "nearest"}
    chunks : int
        Edge of the output blocks (writers go one row of blocks at a time, so this
        also sets the slab held in memory: 64 x side² voxels).
    shape : sequence of 3 int, optional
        Output shape; default ``moving.shape`` (moving on the fixed grid).
    to_moving : numpy.ndarray 4x4, optional
        :func:`moving_index_map` of a moving volume with its own geometry.

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
    out_shape = tuple(int(n) for n in (moving.shape if shape is None else shape))
    expected = tuple(
        max(1, math.ceil(n * s / fs - 1e-6)) for n, s, fs in zip(out_shape, spacing, field_spacing)
    )
    if any(abs(a - b) > 1 for a, b in zip(field.shape[1:], expected)):
        raise InputError(
            f"field grid {field.shape[1:]} at spacing {tuple(field_spacing)} does not cover the volume {out_shape} at spacing {tuple(spacing)}"
        )
    out_dtype = np.float32 if interpolation == "linear" else np.dtype(moving.dtype)
    template = da.zeros(out_shape, chunks=chunks, dtype=out_dtype)

    def block(_: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        assert block_info is not None
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        coords = [
            np.arange(a, b, dtype=np.float32) * np.float32(s / fs)
            for (a, b), s, fs in zip(((z0, z1), (y0, y1), (x0, x1)), spacing, field_spacing)
        ]
        local = np.stack([_separable_linear(field[c], coords) for c in range(3)])
        sample = _coordinates(local, spacing, (z0, y0, x0), to_moving)
        lo = [max(0, int(math.floor(sample[a].min())) - 1) for a in range(3)]
        hi = [min(moving.shape[a], int(math.ceil(sample[a].max())) + 2) for a in range(3)]
        lo = [min(lo[a], hi[a] - 1) for a in range(3)]
        box = moving[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        # Read in this worker thread: a nested threaded compute would start more
        # readers, each holding whole decompressed input chunks at once.
        box = np.asarray(box.compute(scheduler="synchronous") if is_lazy(box) else box)
        for a in range(3):
            sample[a] -= lo[a]
        return _sample(box, sample, interpolation, "nearest")

    return template.map_blocks(block, dtype=out_dtype)


def save_field(
    path: str | Path,
    field: Any,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    direction: Any = None,
) -> Path:
    """Write a field as an ITK displacement-field image (see the module's convention).

    The image takes the fixed grid's spacing, origin and direction; its vectors are
    the world displacements ``direction @ u`` as LPS ``(x, y, z)`` micrometres.

    Parameters
    ----------
    path : path-like
        ``.mha`` (recommended), ``.mhd``, ``.nrrd``, ``.nii`` or ``.nii.gz``. Written
        through a temporary file and a rename.
    field : array-like ``(3, z, y, x)``
        Displacements in micrometres, grid frame.
    spacing : sequence of 3 float
        Voxel size of the fixed grid in micrometres.
    origin, direction : optional
        The fixed volume's world geometry (:class:`~unified_framework.io.Volume`);
        default origin 0 and identity.

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
    if direction is not None and not np.allclose(direction, np.eye(3)):
        world = np.tensordot(np.asarray(direction, np.float64), field, axes=(1, 0))
    else:
        world = field.astype(np.float64)
    # ITK orders vector components like its axes, (x, y, z): reverse ours.
    image = grid_image(
        np.moveaxis(world[::-1], 0, -1), spacing, vector=True, origin=origin, direction=direction
    )
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def load_field(path: str | Path, shape: Sequence[int] | None = None, geometry: bool = False) -> Any:
    """Read a field written by :func:`save_field` (or any 3D ITK displacement field).

    Parameters
    ----------
    path : path-like
        The field image.
    shape : sequence of int, optional
        The grid the field must have; a different one raises :class:`InputError`.
    geometry : bool
        Also return the grid's origin and direction.

    Returns
    -------
    field : numpy.ndarray ``(3, z, y, x)`` float32, micrometres, grid frame
    spacing : tuple of 3 float, micrometres ``(z, y, x)``
    origin : tuple of 3 float (only with ``geometry``)
    direction : numpy.ndarray 3x3 (only with ``geometry``)

    Examples
    --------
    >>> field, spacing = load_field("field.mha")  # doctest: +SKIP
    >>> field, spacing, origin, direction = load_field("field.mha", geometry=True)  # doctest: +SKIP
    """
    import SimpleITK as sitk

    from ..io.volume import validate_direction

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
    spacing, origin, direction = image_geometry(image)
    direction = validate_direction(direction, str(path))
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(
            f"{path}: direction {direction.round(4).tolist()} has skewed axes; expected a rotation (orthonormal direction cosines)"
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x, 3) with world components (x, y, z)
    world = np.moveaxis(array, -1, 0)[::-1]
    if np.allclose(direction, np.eye(3)):
        field = np.ascontiguousarray(world, dtype=np.float32)
    else:
        # World displacements back into the grid frame (direction is a rotation).
        field = np.tensordot(direction.T, world.astype(np.float64), axes=(1, 0)).astype(np.float32)
    field = check_field(field, shape, str(path))
    if geometry:
        return field, spacing, origin, np.array(direction)
    return field, spacing


def to_fixed_grid(
    moving: np.ndarray,
    moving_spacing: Sequence[float],
    fixed_shape: Sequence[int],
    fixed_spacing: Sequence[float],
    interpolation: str = "linear",
    name: str = "moving",
    *,
    moving_origin: Sequence[float] | None = None,
    moving_direction: Any = None,
    fixed_origin: Sequence[float] | None = None,
    fixed_direction: Any = None,
) -> np.ndarray:
    """Resample ``moving`` onto the fixed grid (identity map in world coordinates).

    Registration methods compare voxel by voxel, so both volumes must share one grid:
    each fixed voxel takes the moving value at its world position (origin, direction
    and spacing of both volumes; voxels outside the moving volume are 0). Identical
    grids are returned as they are; spacings more than :data:`MAX_SPACING_RATIO` apart
    are refused (rescale first, e.g. ``--bin``), and so is a moving volume that covers
    less than a tenth of the fixed one.

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
    same_frame = np.allclose(
        world_frame(moving_origin, moving_direction),
        world_frame(fixed_origin, fixed_direction),
        atol=1e-6,
    )
    if (
        same_frame
        and tuple(moving.shape) == tuple(fixed_shape)
        and np.allclose(moving_spacing, fixed_spacing)
    ):
        return moving
    logger.warning(
        "%s: resampling %s at %s um onto the fixed grid %s at %s um%s",
        name,
        moving.shape,
        tuple(moving_spacing),
        tuple(fixed_shape),
        tuple(fixed_spacing),
        "" if same_frame else " (world coordinates: origin and direction differ)",
    )
    source = grid_image(
        moving.astype(np.float32) if interpolation == "linear" else moving,
        moving_spacing,
        origin=moving_origin,
        direction=moving_direction,
    )
    reference = grid_image(
        np.zeros(tuple(fixed_shape), np.uint8),
        fixed_spacing,
        origin=fixed_origin,
        direction=fixed_direction,
    )
    method = sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor
    if not same_frame:
        coverage = _coverage(source, reference)
        if coverage < 0.1:
            raise InputError(
                f"{name}: covers {100 * coverage:.0f}% of the fixed volume in world coordinates (origin/direction); "
                "expected overlapping volumes (check the origins, or resample one volume first)"
            )
    out = sitk.Resample(source, reference, sitk.Transform(), method, 0.0)
    return sitk.GetArrayFromImage(out)


def _coverage(source: Any, reference: Any) -> float:
    """Share of the reference grid's voxels whose world position lies inside ``source``."""
    import SimpleITK as sitk

    ones = sitk.Image(source.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(source)
    inside = sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return float(sitk.GetArrayViewFromImage(inside).mean())
