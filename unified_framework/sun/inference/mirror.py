"""An uncompressed copy, on disk, of the input chunks a file run reads.

A diagonal group of ``g`` slices crosses a band about ``g`` voxels wide, so each input
chunk of edge ``c`` is read about ``c * sqrt(2) / g`` times per diagonal axis. Reading a
compressed chunk means decoding it every time; here each chunk is read from the input
(and decoded) once, on first use, and stored raw in the work directory, where later
reads load it several times faster. Each copy carries a CRC-32
(:func:`~unified_framework.utils.workdir_manifest.write_checked`), checked on its first
read by a process: a missing, truncated or damaged copy is read from the input again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...utils.workdir_manifest import read_checked, write_checked
from .accumulator import chunk_regions


class ChunkMirror:
    """Boxes of a lazily read ``(z, y, x)`` array, read through raw copies of its chunks.

    Parameters
    ----------
    source : array-like
        A Zarr or dask array (anything sliceable with a ``shape`` and ``dtype``).
    directory : path-like
        Where the raw chunks go, one ``.raw`` file each (the bytes in C order and their
        CRC-32). Files are written under a temporary name and renamed, so a killed run
        leaves none half-written and concurrent array tasks may store the same chunk
        (with the same content).
    chunks : sequence of 3 int
        Chunk shape of the copy; pass the source's own chunks so that each is decoded
        once.
    read_errors : callable, optional
        ``read_errors(chunk index)`` gives a context manager around reading that chunk
        from the source, e.g. one that turns a decoding error into an
        :class:`~unified_framework.errors.InputError` naming the chunk's file.
    """

    def __init__(
        self,
        source: Any,
        directory: str | Path,
        chunks: Sequence[int],
        read_errors: Callable[[tuple[int, ...]], contextlib.AbstractContextManager[Any]]
        | None = None,
    ) -> None:
        self.source = source
        self.shape = tuple(int(n) for n in source.shape)
        self.dtype = np.dtype(source.dtype)
        self.chunks = tuple(int(c) for c in chunks)
        self.directory = Path(directory)
        self.read_errors = read_errors or (lambda index: contextlib.nullcontext())
        self._verified: set[tuple[int, ...]] = (
            set()
        )  # copies whose checksum this process has checked

    def __getitem__(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        out = np.empty(tuple(r.stop - r.start for r in region), self.dtype)
        for box in chunk_regions(self.shape, self.chunks, region):
            lo = [max(r.start, b.start) for r, b in zip(region, box)]
            hi = [min(r.stop, b.stop) for r, b in zip(region, box)]
            inside = tuple(slice(a - b.start, z - b.start) for a, z, b in zip(lo, hi, box))
            within = tuple(slice(a - r.start, z - r.start) for a, z, r in zip(lo, hi, region))
            out[within] = self._chunk(box)[inside]
        return out

    def _chunk(self, box: tuple[slice, ...]) -> np.ndarray:
        index = tuple(b.start // c for b, c in zip(box, self.chunks))
        shape = tuple(b.stop - b.start for b in box)
        count = int(np.prod(shape))
        path = self.directory / f"{'.'.join(str(i) for i in index)}.raw"
        stored = read_checked(path, count * self.dtype.itemsize, verify=index not in self._verified)
        if stored is not None:  # else not stored yet, or damaged: store it again
            self._verified.add(index)
            return np.frombuffer(stored, self.dtype, count).reshape(shape)
        with self.read_errors(index):
            data = self.source[box]
            if hasattr(data, "compute"):
                data = data.compute(scheduler="synchronous")
        data = np.ascontiguousarray(data, dtype=self.dtype)
        write_checked(path, data)
        self._verified.add(index)
        return data


def source_chunks(array: Any, default: Sequence[int]) -> tuple[int, int, int]:
    """A Zarr array's chunk shape, else ``default``.

    dask arrays of other formats often have chunks of whole slices (TIFF pages); a box
    read from a raw copy of such a chunk would load the whole slice every time.
    """
    chunks = getattr(array, "chunks", None)
    if (
        chunks is not None
        and len(chunks) == 3
        and all(isinstance(c, (int, np.integer)) for c in chunks)
    ):
        z, y, x = (int(c) for c in chunks)
    else:
        z, y, x = (int(c) for c in default)
    return z, y, x
