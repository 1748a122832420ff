"""Tile grids, Gaussian blending weights, output blocks and tissue detection.

The grid follows MONAI's ``sliding_window_inference`` (and nnU-Net): along each axis
tiles start every ``step = floor(patch * (1 - overlap))`` pixels and the last tile is
moved back to end at the image border, so every tile has the full patch size. Tiles are
blended with a Gaussian importance map (sigma = patch / 8 per axis, maximum 1).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import InputError


def axis_starts(size: int, patch: int, step: int) -> list[int]:
    """Start positions of the tiles along one axis (the last one ends at ``size``).

    Examples
    --------
    >>> axis_starts(10, 4, 2)
    [0, 2, 4, 6]
    >>> axis_starts(11, 4, 3)
    [0, 3, 6, 7]
    """
    if patch > size:
        raise InputError(
            f"tile size {patch} is larger than the image ({size}); choose --patch <= {size}"
        )
    starts = list(range(0, size - patch, max(step, 1)))
    starts.append(size - patch)
    return sorted(set(starts))


def step_of(patch: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Tile step per axis for an overlap fraction in ``[0, 1)``.

    Examples
    --------
    >>> step_of((64, 64), 0.5)
    (32, 32)
    """
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap {overlap}: expected a fraction in [0, 1)")
    return tuple(max(int(p * (1.0 - overlap)), 1) for p in patch)


def gaussian_weights(patch: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian importance map of a patch (maximum 1, no zeros), float32.

    Examples
    --------
    >>> w = gaussian_weights((8, 8))
    >>> w.shape, float(w.max()) == 1.0, bool((w > 0).all())
    ((8, 8), True, True)
    """
    weights = np.ones((), dtype=np.float64)
    for side in patch:
        x = np.arange(side, dtype=np.float64) - (side - 1) / 2.0
        sigma = max(side * sigma_scale, 1e-6)
        weights = np.multiply.outer(weights, np.exp(-(x**2) / (2 * sigma**2)))
    weights = (weights / weights.max()).astype(np.float32)
    positive = weights[weights > 0]
    return np.maximum(weights, positive.min() if positive.size else 1.0)


class Grid:
    """The tiles and output blocks of one image.

    Parameters
    ----------
    shape, patch, step, block : sequence of int
        Spatial image shape, tile size, tile step and output block size per axis.

    Examples
    --------
    >>> grid = Grid((10, 10), (4, 4), (2, 2), (5, 5))
    >>> len(grid.blocks()), len(grid.tiles_in(grid.blocks()[0]))
    (4, 9)
    """

    def __init__(
        self,
        shape: Sequence[int],
        patch: Sequence[int],
        step: Sequence[int],
        block: Sequence[int],
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.patch = tuple(int(p) for p in patch)
        self.step = tuple(int(s) for s in step)
        self.block = tuple(min(int(b), s) for b, s in zip(block, self.shape))
        self.starts = [axis_starts(s, p, st) for s, p, st in zip(self.shape, self.patch, self.step)]

    @property
    def n_tiles(self) -> int:
        return math.prod(len(s) for s in self.starts)

    def blocks(self) -> list[tuple[int, ...]]:
        """Block indices in C order (one output chunk each)."""
        counts = [math.ceil(s / b) for s, b in zip(self.shape, self.block)]
        return list(itertools.product(*(range(c) for c in counts)))

    def block_region(self, index: Sequence[int]) -> tuple[slice, ...]:
        return tuple(
            slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(index, self.block, self.shape)
        )

    def tiles_in(self, index: Sequence[int]) -> list[tuple[int, ...]]:
        """Start corners of every tile overlapping block ``index``, in C order."""
        region = self.block_region(index)
        per_axis = []
        for starts, patch, r in zip(self.starts, self.patch, region):
            lo = bisect.bisect_right(
                starts, r.start - patch
            )  # first start with start + patch > r.start
            hi = bisect.bisect_left(starts, r.stop)  # starts < r.stop
            per_axis.append(starts[lo:hi])
        return list(itertools.product(*per_axis))

    def all_tiles(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*self.starts)

    # Ownership: every tile of the (global) grid belongs to the block holding its start
    # corner, so each tile is predicted once whatever the blocks; its weighted
    # probabilities reach past the block's high sides into the next blocks (the halo).

    def _owned_on_axis(self, axis: int, i: int) -> list[int]:
        starts, b = self.starts[axis], self.block[axis]
        return starts[bisect.bisect_left(starts, i * b) : bisect.bisect_left(starts, (i + 1) * b)]

    def owned(self, index: Sequence[int]) -> list[tuple[int, ...]]:
        """Start corners of the tiles block ``index`` predicts (start inside it), in C order.

        Examples
        --------
        >>> grid = Grid((10, 10), (4, 4), (2, 2), (5, 5))
        >>> sum(len(grid.owned(b)) for b in grid.blocks()) == grid.n_tiles
        True
        """
        return list(itertools.product(*(self._owned_on_axis(a, i) for a, i in enumerate(index))))

    def extent(self, index: Sequence[int]) -> tuple[slice, ...]:
        """The box block ``index``'s own tiles write to: the block and its halo on the high sides.

        Examples
        --------
        >>> Grid((10, 10), (4, 4), (2, 2), (5, 5)).extent((0, 1))
        (slice(0, 7, None), slice(5, 10, None))
        """
        region = self.block_region(index)
        if not self.has_tiles(index):
            return region
        return tuple(
            slice(r.start, self._stop(a, i)) for a, (i, r) in enumerate(zip(index, region))
        )

    def has_tiles(self, index: Sequence[int]) -> bool:
        """Whether any tile starts in block ``index`` (one without reaches no other block)."""
        return all(self._owned_on_axis(a, i) for a, i in enumerate(index))

    def _axis_reach(self, axis: int, i: int, lower: bool) -> list[int]:
        """Block indices ``j`` along ``axis`` whose extent reaches block ``i`` (lower) or that block ``i``'s reaches."""
        count = math.ceil(self.shape[axis] / self.block[axis])
        if lower:
            # a tile of block j ends before (j + 1) * block + patch: only a few blocks back
            start, back = i * self.block[axis], math.ceil(self.patch[axis] / self.block[axis]) + 1
            return [j for j in range(max(0, i - back), i) if self._stop(axis, j) > start] + [i]
        stop = self._stop(axis, i)
        return [j for j in range(i, count) if j * self.block[axis] < stop]

    def _stop(self, axis: int, j: int) -> int:
        own = self._owned_on_axis(axis, j)
        end = min((j + 1) * self.block[axis], self.shape[axis])
        return max(end, own[-1] + self.patch[axis]) if own else end

    def contributors(self, index: Sequence[int]) -> list[tuple[int, ...]]:
        """Other blocks whose tiles reach into block ``index`` (all precede it in C order), in C order.

        Examples
        --------
        >>> Grid((10, 10), (4, 4), (2, 2), (5, 5)).contributors((1, 1))
        [(0, 0), (0, 1), (1, 0)]
        """
        per_axis = [self._axis_reach(a, i, lower=True) for a, i in enumerate(index)]
        index = tuple(index)
        return [c for c in itertools.product(*per_axis) if c != index and self.has_tiles(c)]

    def receivers(self, index: Sequence[int]) -> list[tuple[int, ...]]:
        """Other blocks that block ``index``'s tiles reach into (its halo), in C order."""
        if not self.has_tiles(index):
            return []
        per_axis = [self._axis_reach(a, i, lower=False) for a, i in enumerate(index)]
        index = tuple(index)
        return [c for c in itertools.product(*per_axis) if c != index]

    def touching_starts(self, index: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        """Per axis, the tile starts whose tiles overlap block ``index``."""
        out = []
        for starts, patch, r in zip(self.starts, self.patch, self.block_region(index)):
            lo = bisect.bisect_right(starts, r.start - patch)
            hi = bisect.bisect_left(starts, r.stop)
            out.append(tuple(starts[lo:hi]))
        return tuple(out)


class TissueMask:
    """Foreground at low resolution; a tile is kept when its footprint holds any foreground.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        Foreground at low resolution.
    factor : sequence of float
        Full-resolution pixels per mask pixel, per axis.
    """

    def __init__(self, mask: np.ndarray, factor: Sequence[float]) -> None:
        self.mask = np.asarray(mask, dtype=bool)
        self.factor = tuple(float(f) for f in factor)

    def keeps(self, start: Sequence[int], patch: Sequence[int]) -> bool:
        """Whether the tile at ``start`` touches foreground."""
        index = tuple(
            slice(int(s // f), max(int(math.ceil((s + p) / f)), int(s // f) + 1))
            for s, p, f in zip(start, patch, self.factor)
        )
        return bool(self.mask[index].any())

    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def detect_tissue(
    low: np.ndarray, full_shape: Sequence[int], mode: str = "dark", channel_axis: int | None = None
) -> TissueMask:
    """Otsu threshold of a low-resolution copy: tissue darker (brightfield) or brighter than background.

    Parameters
    ----------
    low : numpy.ndarray
        Low-resolution image (a pyramid level or a strided copy), channels at ``channel_axis``.
    full_shape : sequence of int
        Spatial shape at full resolution (to scale tile coordinates).
    mode : str
        ``dark`` (tissue darker than the background, e.g. H&E on white glass) or ``bright``.
    channel_axis : int, optional
        Axis of colour channels in ``low`` (averaged).

    Examples
    --------
    >>> low = np.full((32, 32), 240.0); low[8:16, 8:16] = 80
    >>> m = detect_tissue(low, (256, 256))
    >>> m.keeps((64, 64), (32, 32)), m.keeps((200, 200), (32, 32))
    (True, False)
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    grey = np.asarray(low, dtype=np.float32)
    if channel_axis is not None:
        grey = grey.mean(axis=channel_axis)
    if mode not in ("dark", "bright"):
        raise InputError(f"tissue mode {mode!r}: expected dark, bright or off")
    if float(grey.max()) == float(grey.min()):
        mask = np.ones(grey.shape, dtype=bool)  # no contrast: nothing can be told apart
    else:
        threshold = threshold_otsu(grey)
        mask = grey < threshold if mode == "dark" else grey > threshold
        # One low-resolution pixel of margin: tissue edges blur at low resolution.
        mask = ndimage.binary_dilation(mask, iterations=1)
    factor = [f / s for f, s in zip(full_shape, grey.shape)]
    return TissueMask(mask, factor)


def low_resolution(data: Any, n_spatial: int, max_side: int = 1024) -> tuple[np.ndarray, int]:
    """A strided copy of ``data`` (spatial axes first) with sides <= ``max_side``, and the stride."""
    spatial = data.shape[:n_spatial]
    stride = max(1, math.ceil(max(spatial) / max_side))
    index = tuple(slice(None, None, stride) for _ in spatial)
    low = data[index]
    if hasattr(low, "compute"):
        low = low.compute(scheduler="synchronous")
    return np.asarray(low), stride
