"""The slicing directions of SUN and the resampling to and from them.

A *slicing axis* is the direction in which SUN steps from one 2D slice to the next
(the normal of the slice planes). All geometry is in voxel-index space, axis order
``(z, y, x)``; for isotropic voxels (the usual case in SRµCT) that is physical space.

Orthogonal axes (slices are plain sub-arrays, resampling is exact):

======  ===================  =========================
name    slice normal         slice image (rows, cols)
======  ===================  =========================
``z``   ``z``                ``(y, x)`` (axial)
``y``   ``y``                ``(z, x)``
``x``   ``x``                ``(z, y)``
======  ===================  =========================

Diagonal axes: for each principal axis ``p``, the two families of planes that contain
``p`` and lie at +-45 degrees to the other two axes ``(a, b)`` (``a`` before ``b``
in ``z, y, x`` order). The name is the slice normal ``n = (e_a + s e_b) / sqrt(2)``:

=========  =====  ==========  ====  ==========================================
name       ``p``  ``(a, b)``  ``s``  planes contain
=========  =====  ==========  ====  ==========================================
``y+x``    z      (y, x)      +1    ``z`` and ``(y - x) / sqrt(2)``
``y-x``    z      (y, x)      -1    ``z`` and ``(y + x) / sqrt(2)``
``z+x``    y      (z, x)      +1    ``y`` and ``(z - x) / sqrt(2)``
``z-x``    y      (z, x)      -1    ``y`` and ``(z + x) / sqrt(2)``
``z+y``    x      (z, y)      +1    ``x`` and ``(z - y) / sqrt(2)``
``z-y``    x      (z, y)      -1    ``x`` and ``(z + y) / sqrt(2)``
=========  =====  ==========  ====  ==========================================

A voxel at plane position ``(a, b)`` has rotated coordinates
``w = (a + s b) / sqrt(2)`` (across the slices) and ``t = (a - s b) / sqrt(2)`` (along
them); inversely ``a = (w + t) / sqrt(2)``, ``b = s (w - t) / sqrt(2)``. The rotated
grid has unit steps (the voxel pitch) at ``w = w0 + i``, ``t = t0 + j`` with
``w0 = floor(min w)``, ``t0 = floor(min t)``, and extends to ``ceil(max w)``,
``ceil(max t)``, so it covers the whole volume: slice ``i`` is the image of size
``(n_p, n_t)`` with rows along ``p`` (unchanged) and columns along ``t``.

* Slice images are sampled with bilinear interpolation in ``(a, b)`` (edge values
  continue beyond the volume); rows along ``p`` hit voxel centres exactly.
* Class probabilities go back (:class:`ProbabilitySlab`) by bilinear interpolation in ``(w, t)``: each voxel
  takes its value from the two slices ``i = floor(w - w0)`` and ``i + 1`` around it,
  so every voxel gets exactly one vote per axis (labels are never interpolated).

Work is split into *units*: the slices of an orthogonal axis, the gaps between
consecutive slices of a diagonal axis. A voxel belongs to exactly one unit per axis;
a range of units ``[u0, u1)`` needs slices ``u0 .. u1 - 1`` (orthogonal) or
``u0 .. u1`` (diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._constants import SQRT_HALF
from ._kernel_loader import kernels
from .votes import diagonal_values, diagonal_votes, pack_votes


@dataclass(frozen=True)
class Axis:
    """A slicing direction.

    Attributes
    ----------
    name : str
        ``z``, ``y``, ``x`` or a diagonal such as ``y+x`` (the slice normal).
    principal : int
        Orthogonal: the axis stepped along. Diagonal: the axis the planes contain.
    plane : tuple of int
        Orthogonal: the axes of the slice image (rows, columns). Diagonal: ``(a, b)``,
        the axes rotated by 45 degrees.
    sign : int
        0 for orthogonal axes, ``+1`` or ``-1`` (``s`` above) for diagonal ones.
    """

    name: str
    principal: int
    plane: tuple[int, int]
    sign: int = 0

    @property
    def diagonal(self) -> bool:
        """True for the six diagonal axes."""
        return self.sign != 0


AXES: dict[str, Axis] = {
    axis.name: axis
    for axis in (
        Axis("z", 0, (1, 2)),
        Axis("y", 1, (0, 2)),
        Axis("x", 2, (0, 1)),
        Axis("y+x", 0, (1, 2), +1),
        Axis("y-x", 0, (1, 2), -1),
        Axis("z+x", 1, (0, 2), +1),
        Axis("z-x", 1, (0, 2), -1),
        Axis("z+y", 2, (0, 1), +1),
        Axis("z-y", 2, (0, 1), -1),
    )
}
#: Canonical order of the axes; plans, pieces and merges follow it.
AXIS_NAMES = tuple(AXES)
ORTHOGONAL = AXIS_NAMES[:3]


def parse_axes(spec: str | int | Iterable[str]) -> tuple[str, ...]:
    """Turn ``3``, ``9`` or a list such as ``"z,y,y+x"`` into axis names in canonical order.

    Raises
    ------
    InputError
        For unknown names or an empty selection.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip() in {"3", "9"}):
        count = int(spec)
        if count not in (3, 9):
            raise InputError(
                f"axes: {count} is not a preset; expected 3, 9 or a list of names from {', '.join(AXIS_NAMES)}"
            )
        return AXIS_NAMES[:count]
    names = (
        [n.strip() for n in spec.split(",")]
        if isinstance(spec, str)
        else [str(n).strip() for n in spec]
    )
    names = [n for n in names if n]
    unknown = [n for n in names if n not in AXES]
    if unknown or not names:
        raise InputError(
            f"axes: {', '.join(unknown) or 'none given'} not understood; expected 3, 9 or names from {', '.join(AXIS_NAMES)}"
        )
    return tuple(n for n in AXIS_NAMES if n in names)


@dataclass(frozen=True)
class AxisGrid:
    """The slice grid of one axis over a volume of spatial shape ``shape``.

    Attributes
    ----------
    axis : Axis
    shape : tuple of 3 int
    n_slices : int
        Number of slice images.
    slice_shape : tuple of 2 int
        ``(rows, columns)`` of every slice image.
    w0, t0 : int
        Origin of the rotated grid (diagonal axes; 0 otherwise).
    """

    axis: Axis
    shape: tuple[int, int, int]
    n_slices: int
    slice_shape: tuple[int, int]
    w0: int = 0
    t0: int = 0

    @property
    def n_units(self) -> int:
        """Number of work units (see the module documentation)."""
        return self.n_slices - 1 if self.axis.diagonal else self.n_slices

    def slices_for_units(self, u0: int, u1: int) -> tuple[int, int]:
        """Slice range ``[s0, s1)`` needed to give votes to units ``[u0, u1)``."""
        return (u0, u1 + 1) if self.axis.diagonal else (u0, u1)

    def unit_range(self, region: Sequence[slice]) -> tuple[int, int]:
        """Units ``[lo, hi)`` touching the voxels of ``region`` (a box of 3 slices)."""
        if not self.axis.diagonal:
            r = region[self.axis.principal]
            return r.start, r.stop
        a, b = self.axis.plane
        corners_a = (region[a].start, region[a].stop - 1)
        corners_b = (region[b].start, region[b].stop - 1)
        ws = [
            (ca + self.axis.sign * cb) * SQRT_HALF - self.w0 for ca in corners_a for cb in corners_b
        ]
        lo = min(max(math.floor(min(ws)), 0), self.n_units - 1)
        hi = min(max(math.floor(max(ws)), 0), self.n_units - 1) + 1
        return lo, hi


def axis_grid(name: str, shape: Sequence[int]) -> AxisGrid:
    """Return the slice grid of axis ``name`` for a volume of spatial shape ``shape``."""
    axis = AXES[name]
    z, y, x = (int(n) for n in shape)
    shape = (z, y, x)
    if not axis.diagonal:
        rows, cols = axis.plane
        return AxisGrid(axis, shape, shape[axis.principal], (shape[rows], shape[cols]))
    a, b = axis.plane
    s = axis.sign
    ws = [(ca + s * cb) * SQRT_HALF for ca in (0, shape[a] - 1) for cb in (0, shape[b] - 1)]
    ts = [(ca - s * cb) * SQRT_HALF for ca in (0, shape[a] - 1) for cb in (0, shape[b] - 1)]
    w0, t0 = math.floor(min(ws)), math.floor(min(ts))
    # At least two slices/columns, so that every voxel lies between two grid lines.
    n_w = max(math.ceil(max(ws)) - w0 + 1, 2)
    n_t = max(math.ceil(max(ts)) - t0 + 1, 2)
    return AxisGrid(axis, shape, n_w, (shape[axis.principal], n_t), w0, t0)


Reader = Callable[[tuple[slice, ...]], np.ndarray]
"""Returns the float32 block ``(channels, z, y, x)`` of a box of the volume."""


def sample_slices(
    read: Reader, grid: AxisGrid, s0: int, s1: int, channels: int, block_bytes: int = 64 * 2**20
) -> np.ndarray:
    """Slice images ``s0 .. s1 - 1`` of ``grid``, shape ``(k, channels, rows, cols)``, float32.

    Orthogonal axes copy voxels. Diagonal axes interpolate bilinearly, reading the
    volume in boxes of about ``block_bytes`` along the slices, so a lazily read volume
    is never loaded whole.
    """
    import torch

    axis = grid.axis
    if not axis.diagonal:
        region = [slice(0, n) for n in grid.shape]
        region[axis.principal] = slice(s0, s1)
        block = read(tuple(region))  # (C, z, y, x)
        return torch.from_numpy(block).movedim(1 + axis.principal, 0).contiguous().numpy()

    p, (a, b), s = axis.principal, axis.plane, axis.sign
    n_p, n_t = grid.slice_shape
    k = s1 - s0
    out = np.empty((k, channels, n_p, n_t), dtype=np.float32)
    # Columns per read: the box around k slices x L columns is about ((k + L) / sqrt 2)^2.
    side = max(int(math.sqrt(block_bytes / (4 * channels * max(n_p, 1)))), 4)
    step = int(min(max(side * math.sqrt(2) - k, 16), n_t))
    w = (grid.w0 + np.arange(s0, s1, dtype=np.float64))[:, None]
    for j0 in range(0, n_t, step):
        t = (grid.t0 + np.arange(j0, min(j0 + step, n_t), dtype=np.float64))[None, :]
        ca = np.clip((w + t) * SQRT_HALF, 0, grid.shape[a] - 1)
        cb = np.clip(s * (w - t) * SQRT_HALF, 0, grid.shape[b] - 1)
        a_lo, a_hi = int(ca.min()), min(int(ca.max()) + 2, grid.shape[a])
        b_lo, b_hi = int(cb.min()), min(int(cb.max()) + 2, grid.shape[b])
        region = [slice(0, n) for n in grid.shape]
        region[a], region[b] = slice(a_lo, a_hi), slice(b_lo, b_hi)
        block = np.moveaxis(
            read(tuple(region)), (1 + p, 1 + a, 1 + b), (1, 2, 3)
        )  # (C, n_p, A, B) view
        kernels().diagonal_sample(
            block,
            s,
            grid.w0 + float(s0),
            grid.t0 + float(j0),
            a_lo,
            b_lo,
            grid.shape[a],
            grid.shape[b],
            out[..., j0 : j0 + t.shape[1]],
        )
    return out


def slice_footprint(grid: AxisGrid, s0: int, s1: int) -> np.ndarray:
    """Which columns of slices ``s0 .. s1 - 1`` lie inside the volume, ``(k, cols)`` bool.

    Diagonal slices are wider than the volume's cross-section; their corners are
    filled with continued edge values and carry no information (all True for
    orthogonal axes). A column is inside when it is within half a voxel of the volume.
    """
    k, n_t = s1 - s0, grid.slice_shape[1]
    if not grid.axis.diagonal:
        return np.ones((k, n_t), dtype=bool)
    a, b = grid.axis.plane
    w = (grid.w0 + np.arange(s0, s1, dtype=np.float64))[:, None]
    t = (grid.t0 + np.arange(n_t, dtype=np.float64))[None, :]
    ca, cb = (w + t) * SQRT_HALF, grid.axis.sign * (w - t) * SQRT_HALF
    return (ca >= -0.5) & (ca <= grid.shape[a] - 0.5) & (cb >= -0.5) & (cb <= grid.shape[b] - 0.5)


class ProbabilitySlab:
    """Class probabilities of consecutive slices, ready to be resampled onto voxels.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(k, classes, rows, cols)`` float32 for the slices
        ``grid.slices_for_units(u0, u1)``.
    grid : AxisGrid
    u0, u1 : int
        The units these slices serve.
    rows_first : bool
        Diagonal axes only: ``probabilities`` is already ``(rows, classes, k, cols)``
        and contiguous (as :func:`diagonal_layout` fills it), which saves a copy.
    """

    def __init__(
        self, probabilities: np.ndarray, grid: AxisGrid, u0: int, u1: int, rows_first: bool = False
    ) -> None:
        self.grid, self.u0, self.u1 = grid, u0, u1
        self.slices = probabilities.shape[2 if rows_first else 0]
        if grid.axis.diagonal and not rows_first:
            # (rows = principal axis, classes, slices, cols): one 2D image per principal position.
            probabilities = diagonal_layout(probabilities)
        self.probabilities = probabilities
        self.num_classes = probabilities.shape[1]

    def on_voxels(self, region: Sequence[slice]) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities on the voxels of ``region`` (a box of 3 slices).

        For orthogonal axes ``region`` must lie within units ``[u0, u1)``.

        Returns
        -------
        values : numpy.ndarray
            ``(classes, *region_shape)`` float32 (orthogonal axes: a view, possibly
            non-contiguous).
        owned : numpy.ndarray of bool or None
            Diagonal axes: which voxels belong to units ``[u0, u1)`` (only those may
            vote); None for orthogonal axes (all do).
        """
        axis = self.grid.axis
        if not axis.diagonal:
            rows, cols = axis.plane
            r = region[axis.principal]
            block = self.probabilities[
                r.start - self.u0 : r.stop - self.u0, :, region[rows], region[cols]
            ]  # (k, C, rows, cols)
            return np.moveaxis(block, 0, 1 + axis.principal), None
        shape = tuple(r.stop - r.start for r in region)
        values = np.empty((self.num_classes, *shape), np.float32)
        p, (a, b) = axis.principal, axis.plane
        owned = np.empty((shape[a], shape[b]), bool)
        diagonal_values(
            self.probabilities,
            self._geometry(),
            (region[p], region[a], region[b]),
            values.transpose(0, 1 + p, 1 + a, 1 + b),
            owned,
        )
        return values, np.broadcast_to(np.expand_dims(owned, p), shape)

    def add_votes(self, region: Sequence[slice], out: np.ndarray, accumulate: bool = True) -> None:
        """Encode the votes of this slab for ``region`` into ``out`` (see :mod:`.votes`).

        ``out`` is the ``(channels, *region_shape)`` uint16 block of an accumulator (any
        strides). Voxels of ``region`` outside units ``[u0, u1)`` add nothing.
        """
        axis = self.grid.axis
        if not axis.diagonal:
            pack_votes(self.on_voxels(region)[0], out=out, accumulate=accumulate)
            return
        p, (a, b) = axis.principal, axis.plane
        diagonal_votes(
            self.probabilities,
            self._geometry(),
            (region[p], region[a], region[b]),
            out.transpose(0, 1 + p, 1 + a, 1 + b),
            accumulate,
        )

    def _geometry(self) -> tuple:
        grid = self.grid
        return (grid.axis.sign, float(grid.w0), float(grid.t0), grid.n_units, self.u0, self.u1)


def diagonal_layout(probabilities: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rearrange ``(k, classes, rows, cols)`` slice probabilities to ``(rows, classes, k, cols)``.

    Along a diagonal axis each row is one position along the principal axis, and the
    resampling reads one 2D image (slices x cols) per row. ``out`` takes the result in
    place (any ``(rows, classes, k', cols)`` view, e.g. part of a group's buffer).
    """
    import torch

    source = torch.from_numpy(probabilities).permute(2, 1, 0, 3)
    if out is None:
        return source.contiguous().numpy()
    torch.from_numpy(out).copy_(source)  # torch copies a permuted tensor with several threads
    return out
