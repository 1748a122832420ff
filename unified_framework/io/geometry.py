"""World geometry of volumes: the affine convention, NIfTI/DICOM frames, resampling.

Convention (``docs/io.md``, "World geometry"): a :class:`~.volume.Volume` maps voxel
index ``(z, y, x)`` to a world position listed ``(z, y, x)`` in micrometres, where the
world axes are DICOM's patient axes: x towards the patient's left, y posterior,
z superior (LPS, as DICOM, ITK and SimpleITK). Listing world positions in array order
(as napari does) makes the affine of a plain TIFF stack ``diag(dz, dy, dx, 1)``.

NIfTI indexes voxels ``(i, j, k) = (x, y, z)`` and maps them to RAS+ millimetres:
``affine = U @ R @ F @ nifti_affine @ R`` with ``R`` the reversal of the three axes,
``F = diag(-1, -1, 1, 1)`` (RAS to LPS) and ``U`` the unit change to micrometres.
DICOM lists LPS millimetres ``(x, y, z)``: reversing them gives ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ._common import from_micrometres, to_micrometres, unit_factor

#: Reverses the three spatial axes of a homogeneous 4x4 matrix: (z, y, x) <-> (x, y, z).
REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
#: RAS+ <-> LPS (x, y, z order): the first two world axes change sign.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Axis letters for the LPS world axes (x, y, z): (towards +, towards -).
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


def compose_affine(spacing: Sequence[float], origin: Sequence[float], direction: Any) -> np.ndarray:
    """The 4x4 affine of a volume from its spacing, origin and direction.

    ``spacing`` may have 2 values (an image): the z column is then ``direction``'s
    first column with length 1.

    Examples
    --------
    >>> compose_affine((2.0, 1.0, 1.0), (5.0, 0.0, 0.0), np.eye(3))[0]
    array([2., 0., 0., 5.])
    """
    steps = (1.0,) * (3 - len(spacing)) + tuple(spacing)[-3:]
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=np.float64) * np.asarray(steps)
    affine[:3, 3] = origin
    return affine


def split_affine(
    affine: Any, name: str = "affine"
) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """``(spacing, origin, direction)`` of a 4x4 affine; spacing is the length of each column.

    Raises
    ------
    InputError
        If ``affine`` is not a finite 4x4 matrix with independent columns.

    Examples
    --------
    >>> spacing, origin, direction = split_affine(np.diag([2.0, 1.0, -0.5, 1.0]))
    >>> spacing, float(direction[2, 2])
    ((2.0, 1.0, 0.5), -1.0)
    """
    from .volume import validate_direction, validate_origin

    try:
        matrix = np.array(affine, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise InputError(f"{name}: expected a finite 4x4 affine matrix")
    linear = matrix[:3, :3]
    spacing = tuple(float(s) for s in np.linalg.norm(linear, axis=0))
    if min(spacing) <= 0:
        raise InputError(
            f"{name}: affine {matrix[:3].round(6).tolist()} has a zero column; expected a voxel size on every axis"
        )
    direction = validate_direction(linear / np.asarray(spacing), name)
    return spacing, validate_origin(matrix[:3, 3], name), direction  # type: ignore[return-value]


def orientation_code(direction: Any) -> str:
    """Axis codes of the index axes x, y, z (NIfTI/nibabel style: where each axis points).

    Examples
    --------
    >>> orientation_code(np.eye(3))
    'LPS'
    >>> orientation_code(np.diag([1.0, -1.0, -1.0]))
    'RAS'
    """
    lps = np.asarray(direction)[::-1]  # rows x, y, z of the LPS world
    letters = []
    for column in (2, 1, 0):  # index axes x, y, z
        vector = lps[:, column]
        axis = int(np.argmax(np.abs(vector)))
        letters.append(_LETTERS[axis][0 if vector[axis] > 0 else 1])
    return "".join(letters)


# ----------------------------------------------------------------------------- HDF5, Zarr attributes
def geometry_attributes(origin: Sequence[float], direction: Any) -> dict[str, Any]:
    """``origin`` (µm, z y x) and ``direction`` (3x3, rows z y x) as JSON-ready attributes.

    HDF5 datasets and Zarr arrays store them so (:func:`geometry_from_attributes` reads them).

    Examples
    --------
    >>> geometry_attributes((0.0, 1.5, 2.0), np.eye(3))["origin"]
    [0.0, 1.5, 2.0]
    """
    return {
        "origin": [float(v) for v in origin],
        "direction": [[float(v) for v in row] for row in np.asarray(direction)],
    }


def geometry_from_attributes(attrs: Mapping[str, Any], name: str) -> tuple[Any, Any]:
    """``(origin, direction)`` from attributes written by :func:`geometry_attributes`; None where absent.

    Raises
    ------
    InputError
        If they are present but malformed.
    """
    from .volume import validate_direction, validate_origin

    origin, direction = attrs.get("origin"), attrs.get("direction")
    if origin is not None:
        unit = attrs.get("origin_units", attrs.get("unit", "um"))
        try:
            origin = [
                to_micrometres(v, unit if unit_factor(unit) else "um") for v in np.ravel(origin)
            ]
        except (TypeError, ValueError, ArithmeticError):
            pass  # validate_origin names the problem
        origin = validate_origin(origin, name)
    if direction is not None:
        direction = validate_direction(direction, name)
    return origin, direction


# ----------------------------------------------------------------------------- NIfTI
def from_nifti_affine(nifti_affine: Any, unit: str) -> np.ndarray:
    """Our affine (µm, LPS, ``(z, y, x)``) from a NIfTI voxel-to-RAS+ affine in ``unit``.

    Entries are converted through their shortest decimal form, so a float32 ``0.65``
    mm becomes exactly 650 µm.
    """
    lps = RAS_TO_LPS @ np.asarray(nifti_affine, dtype=np.float64)
    scaled = np.eye(4)
    for row in range(3):
        for column in range(4):
            scaled[row, column] = to_micrometres(np.float32(lps[row, column]), unit)
    return REVERSE @ scaled @ REVERSE


def to_nifti_affine(affine: Any) -> np.ndarray:
    """The NIfTI voxel-to-RAS+ affine in millimetres of our affine (inverse of :func:`from_nifti_affine`)."""
    lps = REVERSE @ np.asarray(affine, dtype=np.float64) @ REVERSE
    mm = np.eye(4)
    for row in range(3):
        for column in range(4):
            mm[row, column] = float(from_micrometres(lps[row, column], "mm"))
    return RAS_TO_LPS @ mm


# ----------------------------------------------------------------------------- resampling
def resample_to(volume: Any, reference: Any, order: int = 1, fill: float = 0) -> Any:
    """Resample ``volume`` onto the voxel grid of ``reference`` (same world position per voxel).

    Each output voxel ``i`` takes the value of ``volume`` at the world position
    ``reference.affine @ i``, interpolated with a spline of ``order`` (0: nearest
    neighbour, for labels; 1: linear; up to 5). The input is loaded into memory.

    Parameters
    ----------
    volume : Volume
        What to resample (2D or 3D).
    reference : Volume
        Whose grid (shape, spacing, origin, direction) the result takes; only its
        geometry and shape are used, its data is not read.
    order : int
        Spline order, 0 to 5.
    fill : float
        Value of output voxels whose position lies outside ``volume``.

    Returns
    -------
    Volume
        ``reference``'s shape and geometry, ``volume``'s dtype (integers are rounded
        and clipped to their range) and metadata.

    Raises
    ------
    InputError
        If ``order`` is not 0 to 5 or either volume is not 2D or 3D.

    Examples
    --------
    >>> from unified_framework.io import Volume, read_volume, resample_to
    >>> moving = read_volume("ct.nii.gz")                        # doctest: +SKIP
    >>> fixed = read_volume("scan.zarr", lazy=True)              # doctest: +SKIP
    >>> on_grid = resample_to(moving, fixed, order=1)            # doctest: +SKIP
    >>> labels_on_grid = resample_to(labels, fixed, order=0)     # doctest: +SKIP
    """
    from scipy import ndimage

    from .volume import Volume

    if not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise InputError(f"order {order!r}: expected a spline order from 0 (nearest) to 5")
    for name, item in (("volume", volume), ("reference", reference)):
        if item.ndim not in (2, 3):
            raise InputError(
                f"{item.path or name}: has {item.ndim} dimensions; expected a 2D image or 3D volume to resample"
            )
    # index in volume = inverse(volume affine) @ reference affine @ index in reference
    matrix = np.linalg.inv(volume.affine) @ reference.affine
    data = volume.data.compute() if volume.lazy else volume.data
    data = np.asarray(data)
    source = data if data.ndim == 3 else data[None]
    shape = tuple(reference.shape) if reference.ndim == 3 else (1, *reference.shape)
    dtype = np.dtype(data.dtype)
    work = source.astype(np.uint8) if dtype == np.bool_ else source
    exact = order == 0 or dtype.kind == "f"
    out = ndimage.affine_transform(
        work,
        matrix[:3, :3],
        offset=matrix[:3, 3],
        output_shape=shape,
        order=order,
        mode="constant",
        cval=fill,
        output=(work.dtype if exact else np.float64),
    )
    if not exact:
        # Interpolated integers are rounded, not truncated as a cast would do.
        bounds = (0, 1) if dtype == np.bool_ else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        out = np.clip(np.rint(out), *bounds)
    out = out.astype(dtype, copy=False)
    if reference.ndim == 2:
        out = out[0]
    metadata = {
        **volume.metadata,
        "resampled_to": str(reference.path) if reference.path else "reference grid",
    }
    return Volume(out, reference.spacing, metadata, None, reference.origin, reference.direction)
