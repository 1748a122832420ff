"""Which format a path holds: suffix rules, content sniffing and library-error wrapping."""

from __future__ import annotations

import contextlib
import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError, describe_os_error

#: Format names accepted by ``format=`` and returned by :func:`detect_format`.
SUPPORTED_FORMATS = ("tiff", "tiff-folder", "hdf5", "nifti", "dicom", "zarr", "png", "jpeg")

FORMAT_TITLES = {
    "tiff": "TIFF file",
    "tiff-folder": "folder of TIFF slices",
    "hdf5": "HDF5 file",
    "nifti": "NIfTI file",
    "dicom": "DICOM file or series folder",
    "zarr": "Zarr store",
    "png": "PNG image",
    "jpeg": "JPEG image",
}

SUFFIX_FORMATS = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".svs": "tiff",  # Aperio whole-slide image: a tiled, pyramidal TIFF
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".nxs": "hdf5",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".dcm": "dicom",
    ".zarr": "zarr",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}

# Types each writer stores as they are; bool is written as uint8 (0/1) where missing.
_NUMBERS = tuple(f"{kind}{bits}" for kind in ("uint", "int") for bits in (8, 16, 32, 64)) + (
    "float32",
    "float64",
)
WRITABLE_DTYPES = {
    "tiff": _NUMBERS,
    "tiff-folder": _NUMBERS,
    "hdf5": _NUMBERS + ("bool", "float16"),
    "zarr": _NUMBERS + ("bool", "float16"),
    "nifti": _NUMBERS,
    "dicom": ("uint8", "uint16", "int16"),
    # Read only: 8-bit formats that lose precision (JPEG even values) are no output format.
    "png": (),
    "jpeg": (),
}

#: Formats that can hold a ``(y, x, c)`` colour or multi-channel image when writing.
CHANNEL_FORMATS = ("tiff", "zarr")

TIFF_SLICE_SUFFIXES = (".tif", ".tiff")
DICOM_SLICE_SUFFIXES = (".dcm",)

# Leading bytes of formats one may meet under a wrong name, to say what a file really is.
_MAGIC = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
)
_KIND_WORDS = {
    "tiff": "TIFF",
    "hdf5": "HDF5",
    "nifti": "NIfTI",
    "dicom": "DICOM",
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "zip": "ZIP",
    "gzip": "gzip-compressed non-NIfTI data",
}


def split_dataset(path: str | Path, dataset: str | None = None) -> tuple[Path, str | None]:
    """Split ``file.h5::/entry/data/data`` into the file path and the dataset path.

    An explicit ``dataset`` wins over one given in the path.
    """
    text = str(path)
    if "::" in text:
        text, _, inner = text.rpartition("::")
        dataset = dataset or inner or None
    return Path(text), dataset


def suffix_of(path: Path) -> str:
    """Return the lower-case format suffix of ``path`` (``.nii.gz`` counts as one)."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def natural_key(name: str) -> list:
    """Sort key that orders ``slice_2`` before ``slice_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def folder_slices(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files in ``folder`` with one of ``suffixes`` (any case), sorted naturally."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def detect_format(path: str | Path, for_writing: bool = False) -> str:
    """Return the format of ``path``, one of :data:`SUPPORTED_FORMATS`.

    Files are recognised by suffix (``.tif .tiff .h5 .hdf5 .nxs .nii .nii.gz .dcm
    .zarr``); existing folders by content (a Zarr store, ``*.tif`` slices or ``*.dcm``
    slices). With ``for_writing=True`` a path without suffix that is not an existing
    folder means a folder of TIFF slices (use ``format="dicom"`` for a DICOM series).

    Raises
    ------
    InputError
        If the path does not exist (when reading) or its format is unknown.
    """
    path, _ = split_dataset(path)
    suffix = suffix_of(path)
    if path.is_dir() and suffix != ".zarr":
        if (path / ".zarray").exists() or (path / ".zgroup").exists():
            return "zarr"
        if folder_slices(path, DICOM_SLICE_SUFFIXES):
            return "dicom"
        if folder_slices(path, TIFF_SLICE_SUFFIXES):
            return "tiff-folder"
        if for_writing and not suffix:
            return "tiff-folder"
        raise InputError(
            f"{path}: folder holds no *.tif/*.tiff or *.dcm slices and is no Zarr store; expected a folder of image slices"
        )
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if not path.exists() and not for_writing:
        raise InputError(f"{path}: no such file or folder")
    if for_writing and not suffix:
        return "tiff-folder"
    known = " ".join(SUFFIX_FORMATS)
    raise InputError(
        f"{path}: unknown image format (suffix {suffix or 'none'!r}); expected one of {known} or a folder of slices"
    )


def sniff(path: Path) -> str | None:
    """Guess what a file holds from its first bytes; None if unrecognised or empty."""
    with open(path, "rb") as f:
        head = f.read(1024)
    return _sniff_bytes(head, path)


def _sniff_bytes(head: bytes, path: Path | None = None) -> str | None:
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if len(head) >= 348:
        le, be = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
        if 348 in (le, be) and head[344:348] in (b"n+1\x00", b"ni1\x00"):
            return "nifti"
        if 540 in (le, be) and head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return "nifti"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            if kind == "gzip" and path is not None:
                try:
                    with gzip.open(path, "rb") as f:
                        inner = f.read(1024)
                except (OSError, EOFError):
                    return None
                return "nifti" if _sniff_bytes(inner) == "nifti" else "gzip"
            return kind
    return None


def verify_content(path: Path, fmt: str) -> None:
    """Raise :class:`InputError` unless the file at ``path`` starts like a ``fmt`` file.

    Catches mislabelled files (PNG bytes named ``.tif``, HDF5 named ``.nii``) and files
    that are empty or garbage before a library gives a cryptic error.
    """
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); expected a {FORMAT_TITLES[fmt]}")
    kind = sniff(path)
    if kind == fmt or (fmt == "dicom" and kind is None):
        # DICOM files without the 128-byte preamble exist; pydicom judges those.
        return
    what = f"{_KIND_WORDS[kind]} data" if kind else "not a recognised image format (corrupt?)"
    raise InputError(
        f"{path}: content is {what} although the name says {FORMAT_TITLES[fmt]}; expected a valid {FORMAT_TITLES[fmt]}"
    )


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` squeezed onto one line, prefixed by its type."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:300]}"


@contextlib.contextmanager
def library_errors(path: Path, fmt: str) -> Iterator[None]:
    """Turn exceptions raised by reader libraries on bad files into :class:`InputError`.

    Corrupt files make tifffile, h5py, nibabel and pydicom raise almost any exception
    type, so everything except :class:`InputError` and :class:`MemoryError` is wrapped
    (the original stays attached as ``__cause__``). A file the user may not read is
    reported as such (see :func:`unreadable`).
    """
    try:
        yield
    except (InputError, MemoryError):
        raise
    except PermissionError as exc:
        raise unreadable(path, exc) from exc
    except Exception as exc:
        title = FORMAT_TITLES[fmt]
        raise InputError(
            f"{path}: cannot read {title} ({one_line(exc)}); expected a complete, valid {title}"
        ) from exc


def unreadable(path: Path, exc: OSError) -> InputError:
    """The :class:`InputError` for ``path`` (or a file in it) that cannot be opened or listed.

    Examples
    --------
    >>> str(unreadable(Path("scan.tif"), PermissionError(13, "Permission denied", "scan.tif")))
    'scan.tif: cannot read (permission denied); expected a file or folder you may read'
    """
    where = (
        f" {exc.filename}" if exc.filename is not None and str(exc.filename) != str(path) else ""
    )
    return InputError(
        f"{path}: cannot read{where} ({describe_os_error(exc, names=False)}); expected a file or folder you may read"
    )


#: Chunk grids up to this size are accepted however few chunks are stored (absent
#: chunks read as the fill value: sparse label volumes are normal). Larger grids must
#: store at least :data:`MIN_STORED_FRACTION` of their chunks.
SPARSE_GRID = 2**20
MIN_STORED_FRACTION = 1 / 1000


def check_stored_chunks(
    name: str | Path, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], stored: int
) -> None:
    """Refuse a huge chunk grid of which almost nothing is stored (a damaged or edited header).

    The work of every command grows with the grid, not with the stored data: a Zarr
    ``.zarray`` or HDF5 dataset that claims 100000^3 voxels over a few stored chunks
    would keep a conversion busy for days. Callers count the stored chunks cheaply
    (one listing of a Zarr store, HDF5's chunk index).

    Examples
    --------
    >>> check_stored_chunks("sparse.zarr", (512, 512, 512), "uint8", (64, 64, 64), 3)
    >>> check_stored_chunks("edited.zarr", (10**5,) * 3, "uint8", (64, 64, 64), 3)
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: edited.zarr: shape 100000x100000x100000 uint8 claims 3818360547 chunks ...
    """
    grid = 1
    for n, c in zip(shape, chunks):
        grid *= -(-int(n) // int(c))
    if grid > SPARSE_GRID and stored < grid * MIN_STORED_FRACTION:
        raise InputError(
            f"{name}: shape {'x'.join(map(str, shape))} {dtype} claims {grid} chunks of {'x'.join(map(str, chunks))} "
            f"but only {stored} are stored; expected a shape that matches the stored data (is the header damaged?)"
        )


class CheckedChunks:
    """Array-like view of a chunked Zarr array or HDF5 dataset that names a chunk it cannot read.

    Dask reads lazy volumes through it one chunk per task, and eager reads go through
    it slab by slab (:meth:`read_all`), so a corrupt or truncated chunk gives the same
    one-line :class:`InputError` on both paths: the file, the chunk's grid index and
    voxel range, and the library's complaint.

    Parameters
    ----------
    array : zarr.Array or h5py.Dataset
        Anything with ``shape``, ``dtype`` and NumPy-style slicing.
    path : pathlib.Path
        The file or store, for messages.
    fmt : str
        Its format (a key of :data:`FORMAT_TITLES`).
    chunks : tuple of int, optional
        Chunk shape; ``array.chunks`` by default, whole slices for unchunked data.

    Examples
    --------
    >>> import numpy as np
    >>> view = CheckedChunks(np.arange(24).reshape(2, 3, 4), Path("scan.h5"), "hdf5", chunks=(1, 3, 4))
    >>> view.read_all().shape
    (2, 3, 4)
    """

    def __init__(
        self, array: Any, path: Path, fmt: str, chunks: tuple[int, ...] | None = None
    ) -> None:
        self.array, self.path, self.fmt = array, path, fmt
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)
        self.chunks = tuple(chunks or getattr(array, "chunks", None) or (1,) + self.shape[1:])

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.array[key]
        except (InputError, MemoryError):
            raise
        except PermissionError as exc:  # a chunk file the user may not read: not damage
            raise unreadable(self.path, exc) from exc
        except Exception as exc:
            raise self._locate(key, exc) from exc

    def read_all(self) -> Any:
        """The whole array in memory, read in slabs of whole chunks."""
        import numpy as np

        from .volume import slab_bounds

        out = np.empty(self.shape, self.dtype)
        if self.ndim == 0 or not out.size:
            return out
        for start, stop in slab_bounds(self, step=self.chunks[0]):
            out[start:stop] = self[start:stop]
        return out

    def _locate(self, key: Any, exc: Exception) -> InputError:
        """The error naming the first chunk below ``key`` that fails on its own."""
        import itertools

        keys = key if isinstance(key, tuple) else (key,)
        grids = []
        for item, n, c in zip(
            itertools.chain(keys, itertools.repeat(slice(None))), self.shape, self.chunks
        ):
            start, stop = (
                item.indices(n)[:2]
                if isinstance(item, slice)
                else (int(item) % n, int(item) % n + 1)
            )
            grids.append(range(start // c, -(-stop // c)))
        title = FORMAT_TITLES[self.fmt]
        for index in itertools.islice(itertools.product(*grids), 4096):
            bounds = [
                (i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape)
            ]
            try:
                self.array[tuple(slice(a, b) for a, b in bounds)]
            except Exception as inner:  # noqa: BLE001 - whatever the library raises marks this chunk
                where = ", ".join(
                    f"{axis} {a}:{b}" for axis, (a, b) in zip("zyx"[-self.ndim :], bounds)
                )
                return InputError(
                    f"{self.path}: chunk {'.'.join(map(str, index))} ({where}) is corrupt or truncated "
                    f"({one_line(inner)}); expected a complete, valid {title}"
                )
        return InputError(
            f"{self.path}: cannot read {title} ({one_line(exc)}); expected a complete, valid {title}"
        )
