"""numba kernels of SUN's diagonal resampling and of :mod:`unified_framework.sun.votes` (imported on first use: numba loads slowly).

Every kernel has one explicit signature (any-layout arrays where views come in), so it
is compiled once, when this module is first imported on a machine, and loaded from
numba's on-disk cache afterwards (next to this file, or in the user's cache when that
is read-only): no run compiles a new variant half-way. They are module-level functions
with module-level constants, which the cache needs.
"""

import math
from typing import Any

import numpy as np
from numba import njit, prange
from numba import types as nt

from ._constants import PROBABILITY_SCALE, SQRT_HALF, VOTE_BITS, VOTES_PER_CHANNEL

_SCALE = float(PROBABILITY_SCALE)
_SCALE_INT = PROBABILITY_SCALE
_BITS, _PER_CHANNEL = VOTE_BITS, VOTES_PER_CHANNEL
_SQRT_HALF = SQRT_HALF

_F4_4A, _F4_4C, _F4_1C = (
    nt.Array(nt.float32, 4, "A"),
    nt.Array(nt.float32, 4, "C"),
    nt.Array(nt.float32, 1, "C"),
)
_U2_4A, _U2_3A, _U2_1C = (
    nt.Array(nt.uint16, 4, "A"),
    nt.Array(nt.uint16, 3, "A"),
    nt.Array(nt.uint16, 1, "C"),
)
_B1_3A, _B1_2A, _U1_3A, _F8_1C = (
    nt.Array(nt.boolean, 3, "A"),
    nt.Array(nt.boolean, 2, "A"),
    nt.Array(nt.uint8, 3, "A"),
    nt.Array(nt.float64, 1, "C"),
)
_GEOMETRY = (
    nt.int64,
    nt.float64,
    nt.float64,
    nt.int64,
    nt.int64,
    nt.int64,
    nt.int64,
    nt.int64,
    nt.int64,
)  # sign, w0, t0, n_units, u0, u1, p0, a0, b0
# Typed as the keywords njit takes (a dict[str, bool] matches none of its overloads).
_KERNEL: dict[str, Any] = dict(parallel=True, cache=True, nogil=True)


@njit(inline="always")
def store(values, out, i, j, k, accumulate):  # pragma: no cover - compiled
    classes = values.shape[0]
    best = 0  # strict ">" keeps the lowest class on ties, as argmax does
    for c in range(1, classes):
        if values[c] > values[best]:
            best = c
    cumulative, previous = 0.0, 0
    for c in range(classes - 1):
        cumulative += values[c]
        level = int(np.rint(min(max(cumulative, 0.0), 1.0) * _SCALE))
        if accumulate:
            out[c, i, j, k] += level - previous
        else:
            out[c, i, j, k] = level - previous
        previous = level
    if not accumulate:
        for v in range(classes - 1, out.shape[0]):
            out[v, i, j, k] = 0
    if best < classes - 1:
        out[classes - 1 + best // _PER_CHANNEL, i, j, k] += 1 << (_BITS * (best % _PER_CHANNEL))


@njit(nt.void(_F4_4A, _B1_3A, nt.boolean, _U2_4A, nt.boolean), **_KERNEL)
def pack(probabilities, owned, masked, out, accumulate):  # pragma: no cover - compiled
    """Encode orthogonal probabilities; with ``masked``, only voxels where ``owned`` is true vote."""
    classes, depth, rows, cols = probabilities.shape
    for z in prange(depth):
        values = np.empty(classes, np.float32)
        for y in range(rows):
            for x in range(cols):
                if masked and not owned[z, y, x]:
                    if not accumulate:
                        for v in range(out.shape[0]):
                            out[v, z, y, x] = 0
                    continue
                for c in range(classes):
                    values[c] = probabilities[c, z, y, x]
                store(values, out, z, y, x, accumulate)


@njit(inline="always")
def plane(slab, sign, w0, t0, n_units, u0, u1, a0, b0, n_a, n_b):  # pragma: no cover - compiled
    """Per voxel of the (a, b) box: whether the slab owns it, the offset of its top-left
    neighbour in a slice-by-column image of the slab, and its four bilinear weights."""
    slices, cols = slab.shape[2], slab.shape[3]
    owned = np.empty((n_a, n_b), np.bool_)
    offset = np.empty((n_a, n_b), np.int64)
    weights = np.empty((n_a, n_b, 4), np.float32)
    for i in range(n_a):
        for j in range(n_b):
            a, b = a0 + i, b0 + j
            w = (a + sign * b) * _SQRT_HALF - w0  # across slices
            t = (a - sign * b) * _SQRT_HALF - t0  # along them
            unit = min(max(math.floor(w), 0), n_units - 1)
            owned[i, j] = u0 <= unit < u1
            y = min(
                max(w - u0, 0.0), slices - 1.0
            )  # edge values continue, as grid_sample's "border"
            x = min(max(t, 0.0), cols - 1.0)
            r, q = min(int(math.floor(y)), slices - 2), min(int(math.floor(x)), cols - 2)
            fy, fx = np.float32(y - r), np.float32(x - q)
            offset[i, j] = r * cols + q
            weights[i, j, 0], weights[i, j, 1] = (1 - fy) * (1 - fx), (1 - fy) * fx
            weights[i, j, 2], weights[i, j, 3] = fy * (1 - fx), fy * fx
    return owned, offset, weights


@njit(inline="always")
def interpolate(images, p, cols, offset, weights, values):  # pragma: no cover - compiled
    """Bilinear values of all classes at one voxel; ``images`` is the slab as (rows, classes, slices * cols)."""
    for c in range(values.shape[0]):
        values[c] = (
            images[p, c, offset] * weights[0]
            + images[p, c, offset + 1] * weights[1]
            + images[p, c, offset + cols] * weights[2]
            + images[p, c, offset + cols + 1] * weights[3]
        )


@njit(
    nt.void(
        _F4_4A, nt.int64, nt.float64, nt.float64, nt.int64, nt.int64, nt.int64, nt.int64, _F4_4A
    ),
    **_KERNEL,
)
def diagonal_sample(
    block, sign, w_start, t_start, a_lo, b_lo, n_a, n_b, out
):  # pragma: no cover - compiled
    """Bilinear diagonal slice images from a box of the volume.

    ``block`` is the box ``(channels, P, A, B)`` in ``(p, a, b)`` order, starting at
    ``(a_lo, b_lo)`` of a plane of ``n_a x n_b`` voxels; ``out[s, c, p, j]`` gets the
    value at ``w = w_start + s``, ``t = t_start + j``, with coordinates clipped to the
    volume (edge values continue) and lying inside the box.
    """
    slices, channels, n_p, length = out.shape
    box_a, box_b = block.shape[2], block.shape[3]
    at_a = np.empty((slices, length, 2), np.int64)
    at_b = np.empty((slices, length, 2), np.int64)
    weights = np.empty((slices, length, 4), np.float32)
    for s in range(slices):
        for j in range(length):
            w, t = w_start + s, t_start + j
            a = min(max((w + t) * _SQRT_HALF, 0.0), n_a - 1.0) - a_lo
            b = min(max(sign * (w - t) * _SQRT_HALF, 0.0), n_b - 1.0) - b_lo
            ia, ib = min(int(math.floor(a)), box_a - 1), min(int(math.floor(b)), box_b - 1)
            fa, fb = np.float32(a - ia), np.float32(b - ib)
            at_a[s, j, 0], at_a[s, j, 1] = ia, min(ia + 1, box_a - 1)
            at_b[s, j, 0], at_b[s, j, 1] = ib, min(ib + 1, box_b - 1)
            weights[s, j, 0], weights[s, j, 1] = (1 - fa) * (1 - fb), (1 - fa) * fb
            weights[s, j, 2], weights[s, j, 3] = fa * (1 - fb), fa * fb
    for p in prange(n_p):
        for c in range(channels):
            for s in range(slices):
                for j in range(length):
                    a0, a1, b0, b1 = at_a[s, j, 0], at_a[s, j, 1], at_b[s, j, 0], at_b[s, j, 1]
                    out[s, c, p, j] = (
                        block[c, p, a0, b0] * weights[s, j, 0]
                        + block[c, p, a0, b1] * weights[s, j, 1]
                        + block[c, p, a1, b0] * weights[s, j, 2]
                        + block[c, p, a1, b1] * weights[s, j, 3]
                    )


@njit(nt.void(_F4_4C, *_GEOMETRY, _F4_4A, _B1_2A), **_KERNEL)
def diagonal_values(
    slab, sign, w0, t0, n_units, u0, u1, p0, a0, b0, out, owned
):  # pragma: no cover - compiled
    classes, n_p, n_a, n_b = out.shape
    inside, offset, weights = plane(slab, sign, w0, t0, n_units, u0, u1, a0, b0, n_a, n_b)
    owned[...] = inside
    cols = slab.shape[3]
    images = slab.reshape((slab.shape[0], slab.shape[1], slab.shape[2] * cols))
    for k in prange(n_p):
        values = np.empty(classes, np.float32)
        for i in range(n_a):
            for j in range(n_b):
                interpolate(images, p0 + k, cols, offset[i, j], weights[i, j], values)
                for c in range(classes):
                    out[c, k, i, j] = values[c]


@njit(nt.void(_F4_4C, *_GEOMETRY, _U2_4A, nt.boolean), **_KERNEL)
def diagonal_votes(
    slab, sign, w0, t0, n_units, u0, u1, p0, a0, b0, out, accumulate
):  # pragma: no cover - compiled
    classes = slab.shape[1]
    n_p, n_a, n_b = out.shape[1], out.shape[2], out.shape[3]
    owned, offset, weights = plane(slab, sign, w0, t0, n_units, u0, u1, a0, b0, n_a, n_b)
    cols = slab.shape[3]
    images = slab.reshape((slab.shape[0], classes, slab.shape[2] * cols))
    if not accumulate:
        out[...] = 0
    # A group's units are a thin diagonal band: visit only the (a, b) positions it owns.
    at_a, at_b = np.nonzero(owned)
    for k in prange(n_p):
        values = np.empty(classes, np.float32)
        for n in range(at_a.shape[0]):
            i, j = at_a[n], at_b[n]
            interpolate(images, p0 + k, cols, offset[i, j], weights[i, j], values)
            store(values, out, k, i, j, True)


@njit(inline="always")
def half_bits(f):  # pragma: no cover - compiled
    """IEEE float16 bits of float32 bits ``f``, rounded to nearest even (numpy's ``npy_floatbits_to_halfbits``).

    numba has no float16 on CPUs; writing the bits directly saves a float32
    temporary and a conversion pass per output.
    """
    sign = (f & 0x80000000) >> 16
    exponent = f & 0x7F800000
    if exponent >= 0x47800000:  # overflow to infinity, or infinity / NaN
        significand = f & 0x007FFFFF
        if exponent == 0x7F800000 and significand != 0:
            return sign | 0x7C00 | max(significand >> 13, 1)
        return sign | 0x7C00
    if exponent <= 0x38000000:  # a subnormal float16 or zero
        if exponent < 0x33000000:
            return sign
        significand = 0x00800000 + (f & 0x007FFFFF)
        significand >>= 113 - (exponent >> 23)
        if (significand & 0x3FFF) != 0x1000 or (f & 0x7FF) != 0:
            significand += 0x1000
        return sign + (significand >> 13)
    significand = f & 0x007FFFFF
    if (significand & 0x3FFF) != 0x1000:
        significand += 0x1000
    return (
        sign + ((exponent - 0x38000000) >> 13) + (significand >> 13)
    )  # a carry into the exponent is right


@njit(nt.void(_F4_1C, _U2_1C), **_KERNEL)
def to_half_bits(values, out):  # pragma: no cover - compiled
    """``out[i] = float16 bits of values[i]`` for 1-D float32 ``values`` (for tests)."""
    bits = values.view(np.uint32)
    for i in prange(values.shape[0]):
        out[i] = half_bits(np.int64(bits[i]))


@njit(nt.void(_U2_4A, nt.int64, _F8_1C, _U1_3A, _U2_4A, _U2_3A, _U2_3A), **_KERNEL)
def fuse(
    accumulated, n_axes, s_log_s, labels, probabilities, entropy, disagreement
):  # pragma: no cover - compiled
    """Decode the sums into labels and float16 bits (``uint16`` arrays) of the fused measures.

    ``probabilities`` may be ``accumulated`` itself (same channel count): each voxel is
    read whole before it is written. The entropy comes from a table of ``s log s`` of
    the integer sums, without a logarithm per voxel.
    """
    classes, depth, rows, cols = probabilities.shape
    last = classes - 1
    total = n_axes * _SCALE
    normaliser = 1 / (total * math.log(classes))
    log_total = math.log(total)
    for z in prange(depth):
        sums = np.empty(classes, np.int64)
        single = np.empty(1, np.float32)
        bits = single.view(np.uint32)
        for y in range(rows):
            for x in range(cols):
                rest, best = n_axes * _SCALE_INT, 0
                for c in range(last):
                    sums[c] = accumulated[c, z, y, x]
                    rest -= sums[c]
                    if sums[c] > sums[best]:  # strict: ties go to the lower class
                        best = c
                sums[last] = max(rest, 0)  # below 0 only where no axis voted
                if sums[last] > sums[best]:
                    best = last
                counted, agreeing = 0, 0
                for c in range(last):
                    count = (
                        np.int64(accumulated[last + c // _PER_CHANNEL, z, y, x])
                        >> (_BITS * (c % _PER_CHANNEL))
                    ) & (2**_BITS - 1)
                    counted += count
                    if c == best:
                        agreeing = count
                if best == last:
                    agreeing = n_axes - counted
                sum_s_log_s = 0.0
                for c in range(
                    classes
                ):  # written only now: probabilities may share accumulated's memory
                    sum_s_log_s += s_log_s[sums[c]]
                    single[0] = sums[c] / total
                    probabilities[c, z, y, x] = half_bits(np.int64(bits[0]))
                # H = -sum p log p = log T - sum s log s / T, with p = s / T
                single[0] = max(total * log_total - sum_s_log_s, 0.0) * normaliser
                entropy[z, y, x] = half_bits(np.int64(bits[0]))
                single[0] = 1 - agreeing / n_axes
                disagreement[z, y, x] = half_bits(np.int64(bits[0]))
                labels[z, y, x] = best
