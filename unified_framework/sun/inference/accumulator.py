"""The one running accumulator of SUN's soft voting, in memory or in a chunked Zarr store.

Layout: a ``uint16`` array ``(channels, z, y, x)`` holding the sums of every axis'
encoded votes (:mod:`unified_framework.sun.votes`: fixed-point probabilities of all
classes but the last, and 4-bit counts of the axes that voted for each class). For up
to five classes that is two bytes per class and voxel, the size of the fused float16
probabilities, which :func:`predict_volume` writes over it. Integer sums do not
depend on the order of addition, so any split of the work (pieces, SLURM array tasks,
a resumed run) gives a bit-identical result.

The Zarr accumulator has one more channel: for every voxel the number of the last
work unit added to it (plus one). Chunks are written back as whole files, and a unit
is added only where the counter is lower, so a run killed at any point can simply run
the units after its last checkpoint again. A manifest records every chunk written, with
its checksum, so that a chunk lost or damaged later is recomputed, never read as zeros.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import shutil
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ...utils.workdir_manifest import Manifest
from .._kernel_loader import kernels
from ..votes import accumulator_channels

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 64
#: Work units per Zarr accumulator: the chunk counter is a uint16 like the votes.
MAX_UNITS = 2**16 - 1

#: Zarr's little-endian uint16, the layout of the stored chunks.
ACCUMULATOR_DTYPE = np.dtype("<u2")

Region = tuple[slice, ...]
_CHUNK_KEY = re.compile(r"\d+(\.\d+){3}")


def fuse(
    accumulated: np.ndarray, n_axes: int, num_classes: int, out: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Labels and confidence measures from an accumulator block.

    Parameters
    ----------
    accumulated : numpy.ndarray of uint16
        ``(channels, ...)`` block of the accumulator after all axes have voted.
    n_axes : int
        Number of axes that voted.
    num_classes : int
    out : dict of numpy.ndarray, optional
        Where to write some of the results (keys as returned, e.g. regions of
        full-size outputs). ``out["probabilities"]`` may share the memory of
        ``accumulated`` (``accumulated.view(numpy.float16)`` when the encoding has one
        channel per class): every voxel is read before it is written.

    Returns
    -------
    dict
        ``labels`` (uint8, argmax of the fused probabilities, ties to the lower
        class), ``probabilities`` (float16 ``(classes, ...)``, summing to 1),
        ``entropy`` (float16, entropy of the fused distribution divided by
        ``log(classes)``, in [0, 1]) and ``disagreement`` (float16, fraction of axes
        whose own most probable class differs from the fused label).
    """
    if accumulated.shape[0] != accumulator_channels(num_classes):
        raise ValueError(
            f"accumulator block of {accumulated.shape[0]} channels; {num_classes} classes need {accumulator_channels(num_classes)}"
        )
    shape = accumulated.shape[1:]
    fused = {
        "labels": np.empty(shape, np.uint8),
        "probabilities": np.empty((num_classes, *shape), np.float16),
        "entropy": np.empty(shape, np.float16),
        "disagreement": np.empty(shape, np.float16),
    } | (out or {})
    bits = [fused[name].view(np.uint16) for name in ("probabilities", "entropy", "disagreement")]
    kernels().fuse(accumulated, n_axes, _s_log_s(), fused["labels"], *bits)
    return fused


@functools.cache
def _s_log_s() -> np.ndarray:
    """``s log s`` for every possible sum ``s`` of the accumulator (0 log 0 = 0)."""
    s = np.arange(2**16, dtype=np.float64)
    return s * np.log(np.maximum(s, 1))


def chunk_regions(
    shape: Sequence[int], chunks: Sequence[int], within: Sequence[slice] | None = None
) -> Iterator[Region]:
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

    def __init__(
        self, shape: Sequence[int], num_classes: int, chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.num_classes = num_classes
        self.chunks = tuple(int(c) for c in chunks)
        self.array = np.zeros((accumulator_channels(num_classes), *self.shape), dtype=np.uint16)

    def add(self, unit: int, region: Region, packed: np.ndarray) -> None:
        """Add ``packed`` (encoded votes, ``(channels, *region)`` uint16) to ``region``."""
        self.array[(slice(None), *region)] += packed

    def add_votes(self, unit: int, region: Region, slab) -> None:
        """Add the votes of ``slab`` (a :class:`~unified_framework.sun.axes.ProbabilitySlab`) for ``region``."""
        slab.add_votes(region, self.array[(slice(None), *region)])

    def read(self, region: Region) -> np.ndarray:
        """The accumulated ``(channels, *region)`` block."""
        return self.array[(slice(None), *region)]


class ZarrAccumulator:
    """Accumulator in a chunked Zarr store on disk, safe to resume after a kill.

    Chunks are kept in memory after they are read (up to ``cache_bytes``, least
    recently used first out) and written back when they leave the cache or at
    :meth:`flush`: a sweep along an axis then writes each chunk about once instead of
    once per group of slices touching it. Every write replaces one whole chunk file
    (atomically), with the counter channel telling which units it holds, so a kill at
    any point leaves a consistent store: units after the last :meth:`flush` are simply
    run again, and chunks that already hold them skip them.

    The store knows what it holds: a :class:`~unified_framework.utils.workdir_manifest.Manifest`
    lists every written chunk with its size and CRC-32, and the caller's progress
    (``state``), committed by :meth:`flush` after the chunks. Opening an existing store
    verifies every recorded chunk; missing or damaged ones are listed in :attr:`lost`
    (and, with ``repair``, deleted): their votes must be added again, all of them, from
    the first unit. A chunk that was never written reads as zeros; a recorded chunk
    never does. A store without a readable manifest is emptied.

    Parameters
    ----------
    path : path-like
        Zarr directory; created if missing.
    shape : tuple of 3 int
        Spatial shape of the volume.
    num_classes : int
    chunks : tuple of 3 int
        Spatial chunk shape; every chunk file holds all channels of its box.
    cache_bytes : int
        Memory for chunks kept between reads and writes (0: write after every update).
    repair : bool
        Delete missing or damaged chunks from the records (the store's owner does);
        False only reports them in :attr:`lost` (to read a store another process owns).
    """

    def __init__(
        self,
        path: str | Path,
        shape: Sequence[int],
        num_classes: int,
        chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3,
        cache_bytes: int = 0,
        repair: bool = True,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.num_classes = num_classes
        self.chunks = tuple(int(c) for c in chunks)
        self.channels = accumulator_channels(num_classes)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple[int, ...], list] = (
            OrderedDict()
        )  # chunk index -> [block, dirty]
        self._cached_bytes = 0
        self._written = False  # chunks written since the last commit of the manifest
        self._full_chunk = (self.channels + 1, *self.chunks)
        self.manifest = Manifest(self.path)
        #: Chunk indices recorded in the manifest but missing or damaged on disk.
        self.lost: list[tuple[int, ...]] = []
        if not self._open_existing(repair):
            self._create()

    def _open_existing(self, repair: bool) -> bool:
        """Load the manifest of an existing store and verify its chunks; False if there is nothing usable."""
        import zarr

        if not (self.path / ".zarray").exists():
            return not repair  # read-only: an empty store
        try:
            array = zarr.open_array(str(self.path), mode="r")
            usable = (
                array.shape == (self.channels + 1, *self.shape)
                and array.chunks == self._full_chunk
                and array.dtype == ACCUMULATOR_DTYPE
            )
        except Exception:  # damaged metadata: the store is scratch space, made again below
            usable = False
        if not usable or not self.manifest.load():
            if repair:
                logger.warning(
                    "%s: no manifest or damaged metadata; the stored votes are discarded and computed again",
                    self.path,
                )
            return not repair  # read-only: an empty store
        verification = self.manifest.verify()
        if not verification.ok:
            logger.warning(
                "%s: %d chunks missing, %d damaged; their votes are computed again",
                self.path,
                len(verification.missing),
                len(verification.damaged),
            )
            self.lost = [
                _chunk_index(name) for name in verification.bad if _CHUNK_KEY.fullmatch(name)
            ]
            if repair:
                self.manifest.forget(verification.bad)
        return True

    def _create(self) -> None:
        import zarr

        if self.path.exists():
            shutil.rmtree(self.path)
        # The chunks are written by _write (raw, through the manifest); zarr keeps the
        # metadata, so the store stays a plain Zarr array for inspection.
        zarr.open_array(
            str(self.path),
            mode="w",
            shape=(self.channels + 1, *self.shape),
            chunks=self._full_chunk,
            dtype=ACCUMULATOR_DTYPE,
            fill_value=0,
            # Uncompressed: probability sums compress poorly; scratch space is cheaper than CPU.
            compressor=None,
        )
        self.manifest.load()
        self.manifest.commit({})

    @property
    def state(self) -> dict:
        """The progress recorded with the chunks at the last :meth:`flush`."""
        return self.manifest.state

    def add(self, unit: int, region: Region, packed: np.ndarray) -> None:
        """Add ``packed`` to ``region`` (within one chunk) unless work unit ``unit`` is in it already."""
        self._update(unit, region, lambda votes: np.add(votes, packed, out=votes))

    def add_votes(self, unit: int, region: Region, slab) -> None:
        """Add the votes of ``slab`` (a :class:`~unified_framework.sun.axes.ProbabilitySlab`) to ``region`` (within one chunk), as :meth:`add` does."""
        self._update(unit, region, lambda votes: slab.add_votes(region, votes))

    def _update(self, unit: int, region: Region, add_to) -> None:
        """Let ``add_to`` add to the votes of ``region`` and mark ``unit`` done there, unless it is already."""
        if unit >= MAX_UNITS:
            raise ValueError(
                f"{self.path}: work unit {unit}; at most {MAX_UNITS} fit the chunk counter"
            )
        index, local = self._locate(region)
        entry = self._entry(index)
        block = entry[0][(slice(None), *local)]
        if (
            block[self.channels].flat[0] <= unit
        ):  # the counter of the first voxel stands for the region's
            add_to(block[: self.channels])
            block[self.channels] = unit + 1
            entry[1] = True
        while self._cached_bytes > self.cache_bytes and self._cache:
            evicted, (old, dirty) = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
            if dirty:
                self._write(evicted, old)

    def flush(self, state: dict | None = None) -> None:
        """Write every changed chunk, then commit the manifest with ``state`` (default: unchanged).

        After it returns, the units added so far and ``state`` are safe.
        """
        for index, entry in self._cache.items():
            if entry[1]:
                self._write(index, entry[0])
                entry[1] = False
        if self._written or state is not None:
            self.manifest.commit(state)
            self._written = False

    def read(self, region: Region) -> np.ndarray:
        """The accumulated ``(channels, *region)`` block (``region`` within one chunk)."""
        index, local = self._locate(region)
        entry = self._cache.get(index)
        block = entry[0] if entry is not None else self._load(index)
        return block[(slice(0, self.channels), *local)]

    def stored_regions(self) -> Iterator[Region]:
        """Regions of the chunks that have been written (the others are all zero)."""
        self.flush()
        for name in sorted(self.manifest.records):
            if _CHUNK_KEY.fullmatch(name):
                yield self._chunk_box(_chunk_index(name))

    def _locate(self, region: Region) -> tuple[tuple[int, ...], tuple[slice, ...]]:
        """The chunk that ``region`` lies in, and ``region`` relative to it."""
        index = tuple(r.start // c for r, c in zip(region, self.chunks))
        return index, tuple(
            slice(r.start - i * c, r.stop - i * c) for r, i, c in zip(region, index, self.chunks)
        )

    def _chunk_box(self, index: Sequence[int]) -> Region:
        return tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape)
        )

    def _entry(self, index: tuple[int, ...]) -> list:
        entry = self._cache.get(index)
        if entry is None:
            entry = [self._load(index), False]
            self._cache[index] = entry
            self._cached_bytes += entry[0].nbytes
        else:
            self._cache.move_to_end(index)
        return entry

    def _load(self, index: Sequence[int]) -> np.ndarray:
        """A writable copy of chunk ``index``: zeros if it was never written, else its recorded bytes."""
        inside = (slice(None), *(slice(0, b.stop - b.start) for b in self._chunk_box(index)))
        name = _chunk_name(index)
        if name not in self.manifest.records:
            return np.zeros((self.channels + 1, *(s.stop for s in inside[1:])), ACCUMULATOR_DTYPE)
        stored = np.frombuffer(self.manifest.read(name), ACCUMULATOR_DTYPE).reshape(
            self._full_chunk
        )
        return stored[inside].copy()

    def _write(self, index: tuple[int, ...], block: np.ndarray) -> None:
        """Store a chunk as Zarr does without a compressor: C order, padded to the full chunk shape."""
        if block.shape != self._full_chunk:
            full = np.zeros(self._full_chunk, ACCUMULATOR_DTYPE)
            full[(slice(None), *(slice(0, n) for n in block.shape[1:]))] = block
            block = full
        self.manifest.write(_chunk_name(index), np.ascontiguousarray(block, ACCUMULATOR_DTYPE))
        self._written = True


def _chunk_name(index: Sequence[int]) -> str:
    """Zarr's key of a chunk (the channel axis is one chunk)."""
    return ".".join(str(i) for i in (0, *index))


def _chunk_index(name: str) -> tuple[int, ...]:
    return tuple(int(i) for i in name.split("."))[1:]
