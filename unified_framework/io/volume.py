"""The :class:`Volume` container and checks that work on in-memory and lazy (dask) data."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError

#: Slabs handed to writers and reductions hold at most this many bytes (unless one
#: chunk of a lazy array is bigger: chunks are never split, that would re-read them).
SLAB_BYTES = 64 * 2**20


def is_lazy(data: Any) -> bool:
    """Return True if ``data`` is a dask array (evaluated chunk by chunk on demand)."""
    return type(data).__module__.split(".")[0] == "dask"


@dataclass
class Volume:
    """An image or volume with its voxel size and the metadata of its source.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        Voxel values, axis order ``(z, y, x)`` for volumes and ``(y, x)`` for images.
    spacing : sequence of float, optional
        Voxel size per axis in micrometres, same order as ``data``; 1.0 per axis if
        not given.
    metadata : dict, optional
        Source metadata: ``format``, ``dtype``, ``shape`` and the JSON-serialisable
        tags/attributes found in the file.
    path : pathlib.Path, optional
        The file or folder the volume was read from.
    """

    data: Any
    spacing: tuple[float, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        if not hasattr(self.data, "shape") or not hasattr(self.data, "dtype"):
            self.data = np.asarray(self.data)
        if self.spacing is None:
            self.spacing = (1.0,) * self.data.ndim
        self.spacing = validate_spacing(self.spacing, self.data.ndim, str(self.path or "volume"))
        if self.path is not None:
            self.path = Path(self.path)

    @property
    def ndim(self) -> int:
        """Number of axes (2 for an image, 3 for a volume)."""
        return self.data.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of ``data``."""
        return np.dtype(self.data.dtype)

    @property
    def lazy(self) -> bool:
        """True if ``data`` is a dask array."""
        return is_lazy(self.data)

    def compute(self) -> "Volume":
        """Return a copy whose ``data`` is an in-memory numpy array."""
        data = self.data.compute() if self.lazy else self.data
        return Volume(np.asarray(data), self.spacing, dict(self.metadata), self.path)


def validate_spacing(spacing: Sequence[float], ndim: int, name: str) -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of positive finite floats, one per axis.

    Raises
    ------
    InputError
        If the length does not match ``ndim`` or a value is not a positive number.
    """
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"{name}: spacing {spacing!r} is not a sequence of numbers; expected {ndim} voxel sizes in micrometres") from None
    if len(values) != ndim:
        raise InputError(f"{name}: spacing {values} has {len(values)} values; expected {ndim} (one per axis)")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"{name}: spacing {values} must be positive finite voxel sizes in micrometres")
    return values


def check_ndim(shape: Sequence[int], expect_ndim: int | Sequence[int], name: str) -> None:
    """Raise :class:`InputError` unless ``len(shape)`` is one of ``expect_ndim``."""
    allowed = (expect_ndim,) if isinstance(expect_ndim, int) else tuple(expect_ndim)
    if len(shape) in allowed:
        return
    words = {2: "a 2D image", 3: "a 3D volume"}
    wanted = " or ".join(words.get(n, f"{n}D data") for n in allowed)
    dims = "x".join(str(int(n)) for n in shape) or "scalar"
    raise InputError(f"{name}: has {len(shape)} dimensions (shape {dims}); expected {wanted}")


def format_bytes(n: float) -> str:
    """``n`` bytes as ``'1.5 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("not reached")


def check_memory(shape: Sequence[int], dtype: Any, name: str) -> None:
    """Raise :class:`InputError` if an array of ``shape`` and ``dtype`` cannot fit in free memory.

    Readers call it before an eager read, so a volume larger than memory (or a header
    that claims one) is refused at once instead of failing with ``MemoryError`` or
    the kernel's OOM killer after minutes.

    Examples
    --------
    >>> check_memory((16, 32, 24), "uint16", "scan.tif")
    >>> check_memory((100000,) * 3, "uint8", "scan.zarr")
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: scan.zarr: 100000x100000x100000 uint8 needs 909.5 TiB of memory, ...
    """
    from ..system_info import available_memory

    need = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
    if need <= SLAB_BYTES:  # small reads never need the (slower) system query
        return
    free = available_memory()
    if need > free:
        dims = "x".join(str(int(n)) for n in shape)
        raise InputError(
            f"{name}: {dims} {np.dtype(dtype)} needs {format_bytes(need)} of memory, but {format_bytes(free)} is free; "
            "expected a volume that fits in memory (or read it lazily: read_volume(lazy=True), mdlma io convert --chunks)"
        )


def slices_per_slab(shape: Sequence[int], dtype: Any, max_bytes: int | None = None) -> int:
    """How many slices along axis 0 fit in ``max_bytes`` (default :data:`SLAB_BYTES`); at least 1."""
    slice_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize)
    return max(1, (SLAB_BYTES if max_bytes is None else max_bytes) // slice_bytes)


def slab_bounds(data: Any, max_bytes: int | None = None, step: int | None = None) -> list[tuple[int, int]]:
    """Split axis 0 of ``data`` into ``(start, stop)`` slabs of about ``max_bytes``.

    Slab borders fall on multiples of ``step`` if given (an output chunk size), else on
    the chunk borders of a dask array so that no input chunk is read twice.
    """
    n = int(data.shape[0]) if data.ndim else 0
    if n == 0:
        return []
    per_slab = slices_per_slab(data.shape, data.dtype, max_bytes)
    if step:
        borders = list(range(0, n, step)) + [n]
    elif is_lazy(data):
        borders = np.cumsum((0,) + tuple(data.chunks[0])).tolist()
    else:
        borders = list(range(n + 1))
    bounds: list[tuple[int, int]] = []
    start = 0
    for stop, following in zip(borders[1:], borders[2:] + [None]):
        if following is None or following - start > per_slab:
            bounds.append((start, stop))
            start = stop
    return bounds


def iter_slabs(
    data: Any, max_bytes: int | None = None, step: int | None = None, desc: str | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, block)`` with ``block = data[start:stop]`` in memory.

    Lets writers and reductions walk a volume larger than RAM one slab at a time.
    ``step`` aligns slabs to an output chunk size (see :func:`slab_bounds`). With
    ``desc`` a progress bar counts slices on a terminal (never in logs or pipes).
    """
    with tqdm(total=int(data.shape[0]), desc=desc, unit="slice", disable=None if desc else True, leave=False) as bar:
        for start, stop in slab_bounds(data, max_bytes, step):
            block = data[start:stop]
            yield start, stop, np.asarray(block.compute() if is_lazy(block) else block)
            bar.update(stop - start)


def check_finite(volume: "Volume | Any", name: str | None = None) -> None:
    """Raise :class:`InputError` if a volume (or array) holds NaN or infinite values.

    Lazy data is checked slab by slab. Integer data is always finite.

    Parameters
    ----------
    volume : Volume or array
        What to check.
    name : str, optional
        How to call it in the message; defaults to the volume's path.
    """
    data = volume.data if isinstance(volume, Volume) else volume
    if name is None:
        name = str(volume.path) if isinstance(volume, Volume) and volume.path else "volume"
    if not np.issubdtype(np.dtype(data.dtype), np.inexact):
        return
    n_nan = n_inf = 0
    for _, _, block in iter_slabs(data):
        n_nan += int(np.count_nonzero(np.isnan(block)))
        n_inf += int(np.count_nonzero(np.isinf(block)))
    if n_nan or n_inf:
        raise InputError(f"{name}: contains {n_nan} NaN and {n_inf} infinite values; expected finite numbers only")


def value_range(data: Any, desc: str | None = None) -> tuple[float, float, int]:
    """Return ``(min, max, non_finite_count)`` of ``data``, read slab by slab.

    NaN and infinite values are counted and left out of min and max; ``(nan, nan, n)``
    if no value is finite. ``desc`` shows a progress bar (see :func:`iter_slabs`).
    """
    lo, hi, bad = math.inf, -math.inf, 0
    inexact = np.issubdtype(np.dtype(data.dtype), np.inexact)
    for _, _, block in iter_slabs(data, desc=desc):
        if inexact:
            finite = np.isfinite(block)
            bad += int(block.size - np.count_nonzero(finite))
            block = block[finite]
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    if lo > hi:
        return math.nan, math.nan, bad
    return lo, hi, bad
