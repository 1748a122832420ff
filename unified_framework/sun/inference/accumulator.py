"""The one running accumulator of SUN's soft voting, in memory or in a chunked Zarr store.

Layout: a ``uint32`` array ``(classes, z, y, x)``. For every axis each voxel adds, per
class ``c``, its probability in fixed point, ``round(p_c * 2**24)``, plus ``2**28`` if
``c`` is that axis' most probable class. The low 28 bits therefore hold the summed
probabilities and the high 4 bits the number of axes that voted for ``c`` (up to 15
axes). Integer sums do not depend on the order of addition, so any split of the
work (pieces, SLURM array tasks, a resumed run) gives a bit-identical result; the
fixed point resolution (6e-8) is far below float16, the precision of the outputs.

The Zarr accumulator has one more channel, ``classes``: for every chunk the number of
the last work unit added to it (plus one). A chunk is read, added to and written back
as one file, and a unit is added only to chunks whose counter is lower, so a run
killed half-way through adding a unit can simply run that unit again.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

PROBABILITY_SCALE = 2**24
VOTE_UNIT = 2**28
MAX_AXES = 15
DEFAULT_CHUNK = 64

Region = tuple[slice, slice, slice]
_CHUNK_KEY = re.compile(r"\d+(\.\d+){3}")


def pack_votes(
    probabilities: np.ndarray,
    owned: np.ndarray | None = None,
    out: np.ndarray | None = None,
    accumulate: bool = False,
) -> np.ndarray:
    """Fixed-point probabilities plus one vote for the most probable class.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(classes, ...)`` float32 in [0, 1] (any strides).
    owned : numpy.ndarray of bool, optional
        Voxels that take part; the others get zeros (add nothing).
    out : numpy.ndarray of uint32, optional
        Where to write the result (any strides), e.g. a region of an accumulator.
    accumulate : bool
        Add to ``out`` instead of overwriting it.

    Returns
    -------
    numpy.ndarray of uint32
        ``out``, or a new array of the shape of ``probabilities``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if out is None:
        out, accumulate = np.empty(probabilities.shape, np.uint32), False
    if probabilities.ndim == 4:
        _pack_kernel()(probabilities, owned, out, accumulate)
        return out
    # Other ranks (2-D images, tests): through a 4-D view of a contiguous copy.
    classes = probabilities.shape[0]
    flat = np.ascontiguousarray(out).reshape(classes, 1, 1, -1)
    mask = None if owned is None else np.ascontiguousarray(np.broadcast_to(owned, out.shape[1:])).reshape(1, 1, -1)
    _pack_kernel()(np.ascontiguousarray(probabilities).reshape(classes, 1, 1, -1), mask, flat, accumulate)
    out[...] = flat.reshape(out.shape)
    return out


@functools.cache
def _pack_kernel():
    """The compiled kernel of :func:`pack_votes`: one pass over the voxels, in parallel.

    numba, not numpy: numpy needs a dozen passes with temporaries over strided views
    (argmax, rounding, the vote, the owned mask, the add), which cost more than the 2D
    network itself on a CPU. Compiled once per machine (cached next to this file, or in
    the user's cache when that is read-only). It uses as many threads as torch, within
    the CPUs this process may run on (a SLURM job's allocation, not the whole node).
    """
    import numba
    import torch
    from numba import njit, prange

    scale, vote = np.float32(PROBABILITY_SCALE), np.uint32(VOTE_UNIT)

    @njit(parallel=True, cache=True, nogil=True)
    def kernel(probabilities, owned, out, accumulate):  # pragma: no cover - compiled
        classes, depth, rows, cols = probabilities.shape
        for z in prange(depth):
            for y in range(rows):
                for x in range(cols):
                    if owned is not None and not owned[z, y, x]:
                        if not accumulate:
                            for c in range(classes):
                                out[c, z, y, x] = 0
                        continue
                    best = 0  # strict ">" keeps the lowest class on ties, as argmax does
                    for c in range(1, classes):
                        if probabilities[c, z, y, x] > probabilities[best, z, y, x]:
                            best = c
                    for c in range(classes):
                        value = np.uint32(np.rint(probabilities[c, z, y, x] * scale))
                        if c == best:
                            value += vote
                        if accumulate:
                            out[c, z, y, x] += value
                        else:
                            out[c, z, y, x] = value

    def run(probabilities, owned, out, accumulate):
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        numba.set_num_threads(max(1, min(usable, torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        kernel(probabilities, owned, out, accumulate)

    return run


def fuse(accumulated: np.ndarray, n_axes: int) -> dict[str, np.ndarray]:
    """Labels and confidence measures from an accumulator block.

    Parameters
    ----------
    accumulated : numpy.ndarray of uint32
        ``(classes, ...)`` block of the accumulator after all axes have voted.
    n_axes : int
        Number of axes that voted.

    Returns
    -------
    dict
        ``labels`` (uint8, argmax of the fused probabilities, ties to the lower
        class), ``probabilities`` (float32 ``(classes, ...)``, summing to 1),
        ``entropy`` (float32, entropy of the fused distribution divided by
        ``log(classes)``, in [0, 1]) and ``disagreement`` (float32, fraction of axes
        whose own most probable class differs from the fused label).
    """
    # float32 holds the sums to ~1e-7 relative, far below the float16 outputs' precision.
    sums = (accumulated & np.uint32(VOTE_UNIT - 1)).astype(np.float32)
    votes = accumulated >> np.uint32(28)
    labels = sums.argmax(axis=0)
    total = sums.sum(axis=0)
    probabilities = sums / np.where(total > 0, total, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probabilities > 0, probabilities * np.log(probabilities), np.float32(0))
    entropy = -plogp.sum(axis=0) / np.float32(math.log(accumulated.shape[0]))
    agreeing = np.take_along_axis(votes, labels[None], axis=0)[0]
    disagreement = 1 - agreeing.astype(np.float32) / np.float32(n_axes)
    return {
        "labels": labels.astype(np.uint8),
        "probabilities": probabilities.astype(np.float32),
        "entropy": entropy.astype(np.float32),
        "disagreement": disagreement.astype(np.float32),
    }


def chunk_regions(shape: Sequence[int], chunks: Sequence[int], within: Sequence[slice] | None = None) -> Iterator[Region]:
    """Chunk-aligned boxes (clipped to ``shape``) that intersect ``within``, in C order."""
    within = within or [slice(0, n) for n in shape]
    ranges = []
    for n, c, w in zip(shape, chunks, within):
        first, last = w.start // c, (max(w.stop, w.start + 1) - 1) // c
        ranges.append([slice(i * c, min((i + 1) * c, n)) for i in range(first, last + 1)])
    yield from itertools.product(*ranges)


class MemoryAccumulator:
    """Accumulator in a numpy array (no resume; for volumes that fit in memory).

    Parameters
    ----------
    shape : tuple of 3 int
        Spatial shape of the volume.
    num_classes : int
    chunks : tuple of 3 int
        Tile size in which work is added (bounds temporary memory).
    """

    #: Votes may be added in any pieces as they come: nothing is resumed from memory.
    incremental = True

    def __init__(self, shape: Sequence[int], num_classes: int, chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.num_classes = num_classes
        self.chunks = tuple(int(c) for c in chunks)
        self.array = np.zeros((num_classes, *self.shape), dtype=np.uint32)

    def add(self, unit: int, region: Region, packed: np.ndarray) -> None:
        """Add ``packed`` (``(classes, *region)`` uint32) to ``region``."""
        self.array[(slice(None), *region)] += packed

    def add_votes(self, unit: int, region: Region, probabilities: np.ndarray, owned: np.ndarray | None = None) -> None:
        """Add the votes of ``probabilities`` (``(classes, *region)``) to ``region``, packing in place."""
        pack_votes(probabilities, owned, out=self.array[(slice(None), *region)], accumulate=True)

    def read(self, region: Region) -> np.ndarray:
        """The accumulated ``(classes, *region)`` block."""
        return self.array[(slice(None), *region)]


class ZarrAccumulator:
    """Accumulator in a chunked Zarr store on disk, safe to resume after a kill.

    Parameters
    ----------
    path : path-like
        Zarr directory; created if missing.
    shape : tuple of 3 int
        Spatial shape of the volume.
    num_classes : int
    chunks : tuple of 3 int
        Spatial chunk shape; every chunk file holds all channels of its box.
    """

    #: A work unit is added chunk by chunk, each chunk whole (what makes a re-run safe).
    incremental = False

    def __init__(self, path: str | Path, shape: Sequence[int], num_classes: int, chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3) -> None:
        import zarr

        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.num_classes = num_classes
        self.chunks = tuple(int(c) for c in chunks)
        full_shape = (num_classes + 1, *self.shape)
        full_chunks = (num_classes + 1, *self.chunks)
        if (self.path / ".zarray").exists():
            self.array = zarr.open_array(str(self.path), mode="r+")
            if self.array.shape != full_shape or self.array.chunks != full_chunks or self.array.dtype != np.uint32:
                raise ValueError(f"{self.path}: accumulator of another shape {self.array.shape} / chunks {self.array.chunks}")
        else:
            # DirectoryStore writes each chunk to a temporary file and renames it: chunks are atomic.
            self.array = zarr.open_array(
                str(self.path),
                mode="w",
                shape=full_shape,
                chunks=full_chunks,
                dtype=np.uint32,
                fill_value=0,
                # Uncompressed: chunks are read and rewritten once per group touching them,
                # and probability sums compress poorly; scratch space is cheaper than CPU.
                compressor=None,
                write_empty_chunks=False,
            )

    def add(self, unit: int, region: Region, packed: np.ndarray) -> None:
        """Add ``packed`` to ``region`` (one chunk) unless work unit ``unit`` is in it already."""
        self._update(unit, region, lambda votes: np.add(votes, packed, out=votes))

    def add_votes(self, unit: int, region: Region, probabilities: np.ndarray, owned: np.ndarray | None = None) -> None:
        """Add the votes of ``probabilities`` to ``region`` (one chunk), as :meth:`add` does."""
        self._update(unit, region, lambda votes: pack_votes(probabilities, owned, out=votes, accumulate=True))

    def _update(self, unit: int, region: Region, add_to) -> None:
        """Read the chunk, let ``add_to`` add to its votes, mark ``unit`` done, write it back whole."""
        key = (slice(None), *region)
        block = self.array[key]
        if block[self.num_classes].flat[0] > unit:
            return
        add_to(block[: self.num_classes])
        block[self.num_classes] = unit + 1
        self.array[key] = block

    def read(self, region: Region) -> np.ndarray:
        """The accumulated ``(classes, *region)`` block."""
        return self.array[(slice(0, self.num_classes), *region)]

    def stored_regions(self) -> Iterator[Region]:
        """Regions of the chunks that have been written (the others are all zero)."""
        for key in sorted(self.array.store.keys()):
            if not _CHUNK_KEY.fullmatch(key):  # metadata, or a temporary file left by a kill
                continue
            index = [int(i) for i in key.split(".")][1:]
            yield tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape))
