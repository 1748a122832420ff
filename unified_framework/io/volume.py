"""The :class:`Volume` container and checks that work on in-memory and lazy (dask) data."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError

#: Slabs handed to writers and reductions hold at most this many bytes (unless one
#: chunk of a lazy array is bigger: chunks are never split, that would re-read them).
SLAB_BYTES = 64 * 2**20


def is_lazy(data: Any) -> bool:
    """Return True if ``data`` is a dask array (evaluated chunk by chunk on demand)."""
    return type(data).__module__.split(".")[0] == "dask"


@dataclass(eq=False, init=False)
class Volume:
    """An image or volume with its voxel size, its place in the world and the metadata of its source.

    The geometry is held once, as ``spacing``, ``origin`` and ``direction``; the
    4x4 :attr:`affine` is derived from them (see ``docs/io.md``, "World geometry").

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        Voxel values, axis order ``(z, y, x)`` for volumes, ``(y, x)`` for grey images
        and ``(y, x, c)`` for colour or multi-channel 2D images.
    spacing : sequence of float, optional
        Voxel (pixel) size per spatial axis in micrometres, same order as ``data``
        (no entry for the channel axis); 1.0 per axis if not given.
    metadata : dict, optional
        Source metadata: ``format``, ``dtype``, ``shape`` and the JSON-serialisable
        tags/attributes found in the file.
    path : pathlib.Path, optional
        The file or folder the volume was read from.
    origin : sequence of 3 float, optional
        World position of the centre of voxel ``(0, 0, 0)`` in micrometres, listed
        ``(z, y, x)``: the world axes are DICOM's patient axes (x towards the
        patient's left, y posterior, z superior: LPS). ``(0, 0, 0)`` if not given.
    direction : 3x3 array-like, optional
        Unit world vectors (as columns, rows ``z, y, x`` like ``origin``) along
        which the index axes ``z, y, x`` run. Identity if not given. For a 2D image
        the first column is the normal of the image plane.
    axes : str, optional
        ``"zyx"``, ``"yx"`` or ``"yxc"``; derived from ``data.ndim`` if not given
        (empty), so a 3D array is a volume unless it is marked as a channel image.

    Examples
    --------
    >>> import numpy as np
    >>> Volume(np.zeros((4, 5, 6))).axes
    'zyx'
    >>> rgb = Volume(np.zeros((5, 6, 3), np.uint8), spacing=(0.5, 0.5), axes="yxc")
    >>> rgb.channels, rgb.spatial_shape
    (3, (5, 6))
    """

    # The attributes are always set (checked, defaults filled in); the constructor
    # takes None for the optional ones, hence the hand-written __init__.
    data: Any
    spacing: tuple[float, ...]
    metadata: dict[str, Any]
    path: Path | None
    origin: tuple[float, float, float]
    direction: np.ndarray
    axes: str

    def __init__(
        self,
        data: Any,
        spacing: Sequence[float] | None = None,
        metadata: dict[str, Any] | None = None,
        path: str | Path | None = None,
        origin: Sequence[float] | None = None,
        direction: Any = None,
        axes: str = "",
    ) -> None:
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            data = np.asarray(data)
        self.data = data
        self.metadata = {} if metadata is None else metadata
        self.path = None if path is None else Path(path)
        name = str(self.path or "volume")
        self.axes = validate_axes(axes or None, self.data.ndim, name)
        n_spatial = self.data.ndim - ("c" in self.axes)
        self.spacing = validate_spacing(
            (1.0,) * n_spatial if spacing is None else spacing, n_spatial, name
        )
        self.origin = validate_origin(origin, name)
        self.direction = validate_direction(direction, name)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from voxel index ``(z, y, x, 1)`` to world position ``(z, y, x, 1)`` in µm.

        Columns are ``direction`` scaled by ``spacing``, the last column is ``origin``.
        A 2D image ``(y, x)`` is the slice ``z = 0``; its z column is the plane normal
        (1 µm long). Setting it sets ``spacing``, ``origin`` and ``direction``.

        Examples
        --------
        >>> Volume(np.zeros((2, 3, 4)), (2.0, 0.5, 0.5), origin=(10.0, 0.0, 0.0)).affine[:3]
        array([[ 2. ,  0. ,  0. , 10. ],
               [ 0. ,  0.5,  0. ,  0. ],
               [ 0. ,  0. ,  0.5,  0. ]])
        """
        from .geometry import compose_affine

        return compose_affine(self.spacing, self.origin, self.direction)

    @affine.setter
    def affine(self, matrix: Any) -> None:
        from .geometry import split_affine

        spacing, self.origin, self.direction = split_affine(matrix, str(self.path or "volume"))
        self.spacing = spacing[-len(self.spacing) :]

    @property
    def spacing_known(self) -> bool:
        """False when the file this volume was read from gave no voxel size (``spacing`` is then 1 µm).

        Readers say so in ``metadata["spacing_known"]``; a volume made in code, or
        read by a reader that always finds a size (NIfTI), counts as known.

        Examples
        --------
        >>> Volume(np.zeros((2, 2)), metadata={"spacing_known": False}).spacing_known
        False
        >>> Volume(np.zeros((2, 2))).spacing_known
        True
        """
        return bool(self.metadata.get("spacing_known", True))

    @property
    def orientation(self) -> str:
        """Where the index axes x, y, z point, as NIfTI/nibabel axis codes (``"LAS"``, ``"RAS"``, ...).

        Letters: L/R left/right, P/A posterior/anterior, S/I superior/inferior. A TIFF
        stack (identity direction) is ``"LPS"``, as ITK reads it.
        """
        from .geometry import orientation_code

        return orientation_code(self.direction)

    @property
    def ndim(self) -> int:
        """Number of axes (2 for an image, 3 for a volume)."""
        return self.data.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def channels(self) -> int:
        """Number of channels: the length of the ``c`` axis, 1 for grey data."""
        return self.shape[-1] if "c" in self.axes else 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis (the axes ``spacing`` describes)."""
        return self.shape[:-1] if "c" in self.axes else self.shape

    @property
    def dtype(self) -> np.dtype:
        """Data type of ``data``."""
        return np.dtype(self.data.dtype)

    @property
    def lazy(self) -> bool:
        """True if ``data`` is a dask array."""
        return is_lazy(self.data)

    def with_data(self, data: Any) -> Volume:
        """A volume on the same voxel grid (spacing, origin, direction) holding ``data``.

        For results derived voxel by voxel (labels, probabilities): written out, they
        overlay the input. Of the metadata only the entries writers read back are kept
        (NIfTI codes, DICOM modality and frame of reference).

        Examples
        --------
        >>> scan = Volume(np.zeros((2, 3, 4)), (2.0, 1.0, 1.0), origin=(5.0, 0.0, 0.0))
        >>> scan.with_data(np.ones((2, 3, 4), np.uint8)).origin
        (5.0, 0.0, 0.0)
        """
        from ._common import carried

        return Volume(data, self.spacing, carried(self.metadata), None, self.origin, self.direction)

    def compute(self) -> Volume:
        """Return a copy whose ``data`` is an in-memory numpy array."""
        data = self.data.compute() if self.lazy else self.data
        return Volume(
            np.asarray(data),
            self.spacing,
            dict(self.metadata),
            self.path,
            self.origin,
            self.direction,
            self.axes,
        )


def validate_origin(origin: Any, name: str) -> tuple[float, float, float]:
    """Return ``origin`` as three finite floats (``(0, 0, 0)`` for None).

    Raises
    ------
    InputError
        If it is not three finite numbers.
    """
    if origin is None:
        return (0.0, 0.0, 0.0)
    try:
        values = tuple(float(v) for v in origin)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(
            f"{name}: origin {origin!r} must be 3 finite positions in micrometres (z, y, x)"
        )
    return values[0], values[1], values[2]


def validate_direction(direction: Any, name: str) -> np.ndarray:
    """Return ``direction`` as a read-only 3x3 float array of unit columns (identity for None).

    Columns within 1e-3 of unit length are normalised (file formats store cosines
    rounded to a few digits).

    Raises
    ------
    InputError
        If it is not 3x3, holds non-finite values, columns far from unit length, or
        is singular.
    """
    matrix: np.ndarray
    if direction is None:
        matrix = np.eye(3)
    else:
        try:
            matrix = np.array(direction, dtype=np.float64)
        except (TypeError, ValueError):
            matrix = np.zeros(0)
        if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
            raise InputError(f"{name}: direction must be a 3x3 matrix of finite direction cosines")
        norms = np.linalg.norm(matrix, axis=0)
        if not np.all(np.abs(norms - 1) < 1e-3):
            raise InputError(
                f"{name}: direction columns have lengths {norms.round(4).tolist()}; expected unit vectors"
            )
        matrix = matrix / norms
        if abs(np.linalg.det(matrix)) < 1e-6:
            raise InputError(
                f"{name}: direction {matrix.round(4).tolist()} is singular; expected three independent axes"
            )
    matrix.flags.writeable = False
    return matrix


def describe_dtype(dtype: Any) -> str:
    """``uint16``, or ``uint16 (big-endian)`` for data not in the machine's byte order.

    Examples
    --------
    >>> describe_dtype(">u2")
    'uint16 (big-endian)'
    """
    dtype = np.dtype(dtype)
    return dtype.name if dtype.isnative else f"{dtype.name} ({byte_order(dtype)})"


def byte_order(dtype: Any) -> str:
    """``"big-endian"`` or ``"little-endian"`` for data not in the machine's order, else ``"native"``."""
    dtype = np.dtype(dtype)
    if dtype.isnative:
        return "native"
    return "big-endian" if dtype.byteorder == ">" else "little-endian"


def native_order(data: Any) -> Any:
    """``data`` in the machine's byte order (lazy data stays lazy; owned arrays are swapped in place).

    Big-endian files (ImageJ TIFF, many NIfTI) give non-native arrays; everything
    downstream (torch, numba kernels, writers) expects native ones.
    """
    dtype = np.dtype(data.dtype)
    if dtype.isnative:
        return data
    native = dtype.newbyteorder("=")
    if (
        not is_lazy(data)
        and isinstance(data, np.ndarray)
        and data.flags.writeable
        and data.flags.owndata
    ):
        return data.byteswap(inplace=True).view(native)
    return data.astype(native)


#: Axis orders a :class:`Volume` may have: volume, grey image, channel image.
AXES = ("zyx", "yx", "yxc")


def validate_axes(axes: str | None, ndim: int, name: str) -> str:
    """Return the axis string of ``ndim``-dimensional data: ``axes`` checked, or derived.

    Without ``axes`` a 2D array is ``"yx"`` and a 3D array ``"zyx"`` (other ranks get
    placeholder letters; readers refuse them with :func:`check_ndim`).

    Raises
    ------
    InputError
        If ``axes`` is not one of :data:`AXES` or does not match ``ndim``.
    """
    if axes is None:
        return "yx" if ndim == 2 else "zyx" if ndim == 3 else "?" * ndim
    if axes not in AXES or len(axes) != ndim:
        raise InputError(
            f"{name}: axes {axes!r} do not fit {ndim}D data; expected one of {', '.join(AXES)} with one letter per dimension"
        )
    return axes


def check_grey(volume: Volume, name: str | None = None) -> None:
    """Raise :class:`InputError` if ``volume`` is a colour or multi-channel image.

    Segmentation, SUN and scoring work on grey values; a ``(y, x, c)`` image would
    otherwise pass as a 3D volume with ``c`` columns.

    Examples
    --------
    >>> import numpy as np
    >>> check_grey(Volume(np.zeros((4, 5, 6))))
    >>> check_grey(Volume(np.zeros((5, 6, 3)), axes="yxc"), "photo.png")
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: photo.png: is a colour/multi-channel image (5x6 pixels, 3 channels); expected grey values: convert it with `mdlma io convert IN OUT --grey` or unified_framework.image.to_grey
    """
    if "c" not in volume.axes:
        return
    name = name or str(volume.path or "volume")
    pixels = "x".join(map(str, volume.spatial_shape))
    raise InputError(
        f"{name}: is a colour/multi-channel image ({pixels} pixels, {volume.channels} channels); expected grey values: "
        "convert it with `mdlma io convert IN OUT --grey` or unified_framework.image.to_grey"
    )


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
        raise InputError(
            f"{name}: spacing {spacing!r} is not a sequence of numbers; expected {ndim} voxel sizes in micrometres"
        ) from None
    if len(values) != ndim:
        raise InputError(
            f"{name}: spacing {values} has {len(values)} values; expected {ndim} (one per axis)"
        )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(
            f"{name}: spacing {values} must be positive finite voxel sizes in micrometres"
        )
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


def slab_bounds(
    data: Any, max_bytes: int | None = None, step: int | None = None
) -> list[tuple[int, int]]:
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
    with tqdm(
        total=int(data.shape[0]),
        desc=desc,
        unit="slice",
        disable=None if desc else True,
        leave=False,
    ) as bar:
        for start, stop in slab_bounds(data, max_bytes, step):
            block = data[start:stop]
            yield start, stop, _materialise(block)
            bar.update(stop - start)


def _materialise(block: Any) -> np.ndarray:
    """``block`` in memory; a dask slab is stored block by block into one array.

    ``compute()`` would hold every finished block and then their concatenation
    (twice the slab); storing into a preallocated array holds the slab once.
    """
    if not is_lazy(block):
        return np.asarray(block)
    import dask.array as da

    out = np.empty(block.shape, dtype=block.dtype)
    da.store(block, out, lock=False)
    return out


def check_finite(volume: Volume | Any, name: str | None = None) -> None:
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
        raise InputError(
            f"{name}: contains {n_nan} NaN and {n_inf} infinite values; expected finite numbers only"
        )


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
