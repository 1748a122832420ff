"""Format-independent entry points: :func:`read_volume`, :func:`write_volume`."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path
from .formats import (
    FORMAT_TITLES,
    SUPPORTED_FORMATS,
    WRITABLE_DTYPES,
    detect_format,
    library_errors,
    split_dataset,
    unreadable,
    verify_content,
)
from .volume import Volume, check_finite, check_ndim, is_lazy, validate_spacing, value_range

__all__ = ["SUPPORTED_FORMATS", "detect_format", "open_volume", "read_volume", "write_volume"]

logger = logging.getLogger(__name__)

# format -> (backend module, name of its read_*/write_* pair); modules are imported on
# first use so that importing the package (and ``mdlma --help``) stays fast.
_BACKENDS = {
    "tiff": ("_tiff", "tiff"),
    "tiff-folder": ("_tiff", "tiff_folder"),
    "hdf5": ("_hdf5", "hdf5"),
    "nifti": ("_nifti", "nifti"),
    "dicom": ("_dicom", "dicom"),
    "zarr": ("_zarr", "zarr"),
}
_WITH_DATASETS = ("hdf5", "zarr")


def _backend(fmt: str, action: str) -> Callable[..., Any]:
    """The ``read_<format>`` or ``write_<format>`` function (``action`` "read"/"write")."""
    module, name = _BACKENDS[fmt]
    return getattr(importlib.import_module(f"{__package__}.{module}"), f"{action}_{name}")


def _check_format(fmt: str | None, path: Path) -> None:
    if fmt is not None and fmt not in SUPPORTED_FORMATS:
        raise InputError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(SUPPORTED_FORMATS)}")


def read_volume(
    path: str | Path,
    dataset: str | None = None,
    *,
    lazy: bool = False,
    expect_ndim: int | Sequence[int] = (2, 3),
    allow_nan: bool = True,
    format: str | None = None,
) -> Volume:
    """Read an image or volume from any supported format.

    Parameters
    ----------
    path : str or path-like
        File or folder; ``file.h5::/entry/data/data`` (or ``store.zarr::array``) names
        a dataset inside the file.
    dataset : str, optional
        Dataset inside an HDF5 file or Zarr group; found automatically when the file
        holds exactly one 2D/3D dataset or NeXus ``default``/``signal`` attributes
        point to one.
    lazy : bool
        Return ``data`` as a dask array read chunk by chunk on demand, for volumes
        larger than memory. Errors inside the data then surface when it is computed.
    expect_ndim : int or sequence of int
        Accepted numbers of dimensions (default 2 or 3).
    allow_nan : bool
        If False, NaN or infinite values raise :class:`InputError` (lazy data is then
        scanned once, slab by slab).
    format : str, optional
        One of :data:`SUPPORTED_FORMATS`; detected from the path if not given.

    Returns
    -------
    Volume
        Data in ``(z, y, x)`` / ``(y, x)`` order, spacing in micrometres.

    Raises
    ------
    InputError
        Missing, mislabelled, truncated or corrupt input, an unknown format, a missing
        dataset, the wrong number of dimensions or (``allow_nan=False``) NaN values.
    """
    path, dataset = split_dataset(path, dataset)
    _check_format(format, path)
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        fmt = format or detect_format(path)
        if dataset is not None and fmt not in _WITH_DATASETS:
            raise InputError(f"{path}: a {FORMAT_TITLES[fmt]} has no datasets (got dataset {dataset!r}); datasets apply to HDF5 and Zarr only")
        if path.is_file():
            verify_content(path, fmt)
    except OSError as exc:  # a folder on the way, the file or the folder itself is not readable
        raise unreadable(path, exc) from exc
    reader = _backend(fmt, "read")
    with library_errors(path, fmt):
        volume = reader(path, dataset=dataset, lazy=lazy, expect_ndim=expect_ndim)
    # Readers check the shape before loading data; this catches any they could not.
    check_ndim(volume.shape, expect_ndim, str(path))
    volume.metadata = {"format": fmt, "dtype": str(volume.dtype), "shape": list(volume.shape), **volume.metadata}
    if not allow_nan:
        check_finite(volume, str(path))
    logger.debug("read %s: %s %s spacing %s", path, volume.shape, volume.dtype, volume.spacing)
    return volume


def open_volume(path: str | Path, dataset: str | None = None, **kwargs: Any) -> Volume:
    """Open a volume lazily: :func:`read_volume` with ``lazy=True``."""
    return read_volume(path, dataset, lazy=True, **kwargs)


def write_volume(
    path: str | Path,
    volume: Volume | Any,
    spacing: Sequence[float] | None = None,
    *,
    dataset: str | None = None,
    chunks: int | Sequence[int] | None = None,
    dtype: Any = None,
    format: str | None = None,
) -> Path:
    """Write an image or volume; the format follows the suffix of ``path``.

    ``.tif/.tiff`` multi-page TIFF, ``.h5/.hdf5/.nxs`` HDF5 (NeXus NXdata layout),
    ``.nii/.nii.gz`` NIfTI, ``.zarr`` Zarr, ``.dcm`` a single 2D DICOM file, no suffix
    a folder of TIFF slices (``format="dicom"``: a DICOM series). Dask arrays are
    written slab by slab without loading the whole volume. The output appears
    atomically: on failure nothing (not even a temporary) is left behind.

    Parameters
    ----------
    path : str or path-like
        Destination; ``file.h5::/group/dataset`` names the HDF5/Zarr dataset.
    volume : Volume or array-like
        What to write (numpy or dask array, ``(z, y, x)`` or ``(y, x)``).
    spacing : sequence of float, optional
        Voxel size in micrometres; defaults to ``volume.spacing`` (1.0 for arrays).
    dataset : str, optional
        Dataset path in HDF5 (default ``/entry/data/data``) or Zarr (default: root).
    chunks : int or sequence of int, optional
        Chunk shape for HDF5 and Zarr (an int means that edge on every axis).
    dtype : numpy dtype, optional
        Cast to this type first; values outside its range raise :class:`InputError`.
    format : str, optional
        One of :data:`SUPPORTED_FORMATS`, overriding the suffix.

    Returns
    -------
    pathlib.Path
        The written file or folder.
    """
    path, dataset = split_dataset(path, dataset)
    _check_format(format, path)
    fmt = format or detect_format(path, for_writing=True)
    if dataset is not None and fmt not in _WITH_DATASETS:
        raise InputError(f"{path}: a {FORMAT_TITLES[fmt]} has no datasets (got dataset {dataset!r}); datasets apply to HDF5 and Zarr only")
    if isinstance(volume, Volume):
        data, metadata, source = volume.data, volume.metadata, volume.path
        spacing = volume.spacing if spacing is None else spacing
    else:
        data, metadata, source = (volume if is_lazy(volume) else np.asarray(volume)), {}, None
    check_ndim(data.shape, (2, 3), f"data to write to {path}")
    spacing = validate_spacing((1.0,) * data.ndim if spacing is None else spacing, data.ndim, str(path))
    if isinstance(chunks, int):
        chunks = (chunks,) * data.ndim
    if chunks is not None and (len(chunks) != data.ndim or min(chunks) < 1):
        raise InputError(f"{path}: chunks {tuple(chunks)} must be {data.ndim} positive sizes")
    if dtype is not None:
        data = _cast(data, np.dtype(dtype), path)
    if data.dtype == np.bool_ and "bool" not in WRITABLE_DTYPES[fmt]:
        data = data.astype(np.uint8)
    if np.dtype(data.dtype).name not in WRITABLE_DTYPES[fmt]:
        raise InputError(
            f"{path}: a {FORMAT_TITLES[fmt]} cannot store dtype {data.dtype}; expected one of "
            f"{', '.join(WRITABLE_DTYPES[fmt])} (convert with dtype=)"
        )
    volume = Volume(data, spacing, metadata, source)
    writer = _backend(fmt, "write")
    with atomic_path(path) as tmp:
        writer(tmp, volume, dataset=dataset, chunks=chunks, name=str(path))
    logger.debug("wrote %s (%s): %s %s", path, fmt, volume.shape, volume.dtype)
    return path


def _cast(data: Any, dtype: np.dtype, path: Path) -> Any:
    """Cast ``data`` to ``dtype``; an integer type must hold every value (one lazy pass)."""
    if np.issubdtype(dtype, np.integer) and not np.can_cast(data.dtype, dtype, "safe"):
        lo, hi, bad = value_range(data)
        info = np.iinfo(dtype)
        if bad or lo < info.min or hi > info.max:
            raise InputError(
                f"{path}: values range {lo:g}..{hi:g}"
                + (f" with {bad} NaN/Inf" if bad else "")
                + f" do not fit {dtype}; expected a dtype that holds them"
            )
    return data.astype(dtype)
