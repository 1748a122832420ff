"""SUN's vote encoding and the compiled kernels that resample and pack votes.

Encoding (``uint16``, ``accumulator_channels(classes)`` channels per voxel). Each
axis adds, for every voxel,

* channels ``0 .. classes - 2``: the probabilities of classes ``0 .. classes - 2`` in
  fixed point, :data:`PROBABILITY_SCALE` levels per axis. They are rounded
  cumulatively (``level(P_c) - level(P_{c-1})`` for the cumulative sums ``P``), so the
  levels of all classes of one axis add up to exactly :data:`PROBABILITY_SCALE` and the
  last class' sum is implicit: ``axes * PROBABILITY_SCALE`` minus the others;
* the following ``ceil((classes - 1) / 4)`` channels: one vote for the axis' most
  probable class, as a 4-bit counter per class ``0 .. classes - 2`` (four to a
  channel); the last class' count is again the number of axes minus the others.

Up to :data:`MAX_AXES` axes fit (15 x 4369 = 65535, and 15 in 4 bits). For up to five
classes the accumulator has as many channels as classes, two bytes per class and
voxel: exactly the size of the fused float16 probabilities, which can therefore be
written over it. Integer sums do not depend on the order of addition, so every split
of the work (pieces, SLURM array tasks, resumed runs) gives bit-identical results.

The kernels (numba) do in one pass over the voxels what numpy needs a dozen passes and
full-size temporaries for: bilinear resampling of a diagonal axis' probabilities onto
the voxels, the argmax, the fixed-point rounding and the addition. They are compiled
once per machine (cached next to this file, or in the user's cache when that is
read-only) and use as many threads as torch, within the CPUs this process may run on
(a SLURM job's allocation, not the whole node).
"""

from __future__ import annotations

import numpy as np

from ._constants import MAX_AXES, PROBABILITY_SCALE, VOTE_BITS, VOTES_PER_CHANNEL
from ._kernel_loader import kernels

__all__ = [
    "MAX_AXES",
    "PROBABILITY_SCALE",
    "VOTES_PER_CHANNEL",
    "VOTE_BITS",
    "accumulator_channels",
    "diagonal_values",
    "diagonal_votes",
    "pack_votes",
]


def accumulator_channels(num_classes: int) -> int:
    """Number of ``uint16`` channels the encoding needs for ``num_classes`` classes."""
    return num_classes - 1 + -(-(num_classes - 1) // VOTES_PER_CHANNEL)


def pack_votes(
    probabilities: np.ndarray,
    owned: np.ndarray | None = None,
    out: np.ndarray | None = None,
    accumulate: bool = False,
) -> np.ndarray:
    """Encode the votes of class probabilities (one axis) and optionally add them.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(classes, z, y, x)`` float32 in [0, 1] summing to 1 over classes (any strides).
    owned : numpy.ndarray of bool, optional
        ``(z, y, x)``: voxels that take part; the others add nothing (zeros).
    out : numpy.ndarray of uint16, optional
        ``(accumulator_channels(classes), z, y, x)``, any strides (e.g. a region of an
        accumulator).
    accumulate : bool
        Add to ``out`` instead of overwriting it.

    Returns
    -------
    numpy.ndarray of uint16
        ``out``, or a new array.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 4:
        raise ValueError(
            f"probabilities of shape {probabilities.shape}; expected (classes, z, y, x)"
        )
    if out is None:
        out, accumulate = (
            np.empty(
                (accumulator_channels(probabilities.shape[0]), *probabilities.shape[1:]), np.uint16
            ),
            False,
        )
    masked = owned is not None
    owned = (
        np.broadcast_to(owned, probabilities.shape[1:]).copy()
        if owned is not None
        else np.ones((1, 1, 1), bool)
    )
    kernels().pack(probabilities, owned, masked, out, accumulate)
    return out


def diagonal_values(
    slab: np.ndarray,
    geometry: tuple,
    region_pab: tuple[slice, slice, slice],
    out: np.ndarray,
    owned: np.ndarray,
) -> None:
    """Resample a diagonal axis' probabilities onto the voxels of a box (bilinear in ``(w, t)``).

    Parameters
    ----------
    slab : numpy.ndarray
        ``(rows, classes, slices, cols)`` float32, C-contiguous: rows are positions along
        the principal axis (see :func:`unified_framework.sun.axes.diagonal_layout`).
    geometry : tuple
        ``(sign, w0, t0, n_units, u0, u1)`` of the axis grid and the slab's units.
    region_pab : tuple of 3 slice
        The box in ``(p, a, b)`` order (principal axis, rotated pair).
    out : numpy.ndarray
        ``(classes, P, A, B)`` float32 view in ``(p, a, b)`` order: the probabilities.
    owned : numpy.ndarray of bool
        ``(A, B)``: which voxels belong to the slab's units.
    """
    kernels().diagonal_values(
        slab,
        *geometry,
        region_pab[0].start,
        region_pab[1].start,
        region_pab[2].start,
        out,
        owned,
    )


def diagonal_votes(
    slab: np.ndarray,
    geometry: tuple,
    region_pab: tuple[slice, slice, slice],
    out: np.ndarray,
    accumulate: bool,
) -> None:
    """Resample, encode and add a diagonal axis' votes for the voxels of a box it owns.

    As :func:`diagonal_values`, but ``out`` is the ``(channels, P, A, B)`` uint16 view of
    an accumulator region in ``(p, a, b)`` order; voxels outside the slab's units are
    left alone (``accumulate``) or set to zero.
    """
    kernels().diagonal_votes(
        slab,
        *geometry,
        region_pab[0].start,
        region_pab[1].start,
        region_pab[2].start,
        out,
        accumulate,
    )
