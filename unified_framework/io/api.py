"""Format-independent entry points: :func:`read_volume`, :func:`write_volume`."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path
from ._common import ZARR_COMPRESSIONS, default_chunks
from .formats import (
    CHANNEL_FORMATS,
    FORMAT_TITLES,
    SUPPORTED_FORMATS,
    WRITABLE_DTYPES,
    detect_format,
    library_errors,
    split_dataset,
    unreadable,
    verify_content,
)
from .volume import (
    Volume,
    byte_order,
    check_finite,
    check_grey,
    check_ndim,
    is_lazy,
    native_order,
    validate_axes,
    validate_spacing,
    value_range,
)

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
    "png": ("_image2d", "png"),
    "jpeg": ("_image2d", "jpeg"),
}
_WITH_DATASETS = ("hdf5", "zarr")
# Formats with pyramids: TIFF (OME-TIFF SubIFDs, SVS, reduced pages) and OME-Zarr.
_WITH_LEVELS = ("tiff", "zarr")


def _backend(fmt: str, action: str) -> Callable[..., Any]:
    """The ``read_<format>`` or ``write_<format>`` function (``action`` "read"/"write")."""
    module, name = _BACKENDS[fmt]
    return getattr(importlib.import_module(f"{__package__}.{module}"), f"{action}_{name}")


def _check_format(fmt: str | None, path: Path) -> None:
    if fmt is not None and fmt not in SUPPORTED_FORMATS:
        raise InputError(
            f"{path}: unknown format {fmt!r}; expected one of {', '.join(SUPPORTED_FORMATS)}"
        )


def read_volume(
    path: str | Path,
    dataset: str | None = None,
    *,
    lazy: bool = False,
    expect_ndim: int | Sequence[int] = (2, 3),
    allow_nan: bool = True,
    format: str | None = None,
    level: int | None = None,
    grey: bool = False,
) -> Volume:
    """Read an image or volume from any supported format.

    Colour and multi-channel 2D images (RGB/RGBA PNG, JPEG, TIFF, OME-TIFF, SVS) are
    read as ``(y, x, c)`` with ``axes="yxc"``; ``spacing`` is then the pixel size
    ``(dy, dx)``.

    Parameters
    ----------
    path : str or path-like
        File or folder; ``file.h5::/entry/data/data`` (or ``store.zarr::array``) names
        a dataset inside the file, ``slide.svs::2`` a pyramid level of a TIFF.
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
    level : int, optional
        Pyramid level of a pyramidal TIFF/SVS or OME-Zarr (0 = full resolution, the
        default); ``metadata["levels"]`` lists the shape and pixel size of each.
    grey : bool
        Refuse colour/multi-channel images (for grey-value methods), see
        :func:`~unified_framework.io.check_grey`.

    Returns
    -------
    Volume
        Data in ``(z, y, x)`` / ``(y, x)`` / ``(y, x, c)`` order (``Volume.axes``) and
        the machine's byte order (big-endian files are converted;
        ``metadata["byte_order"]`` says so), spacing in micrometres, origin and
        direction as the file gives them (``docs/io.md``).

    Raises
    ------
    InputError
        Missing, mislabelled, truncated or corrupt input, an unknown format, a missing
        dataset or level, the wrong number of dimensions, (``grey=True``) a colour
        image or (``allow_nan=False``) NaN values.

    Examples
    --------
    >>> rgb = read_volume("slide.svs", level=1, lazy=True)        # doctest: +SKIP
    >>> rgb.axes, rgb.spacing, rgb.metadata["levels"]             # doctest: +SKIP
    ('yxc', (1.0, 1.0), [{'shape': [1000, 1200, 3], 'spacing_um': [0.5, 0.5]}, ...])
    """
    path, dataset = split_dataset(path, dataset)
    _check_format(format, path)
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        fmt = format or detect_format(path)
        if fmt == "tiff" and dataset is not None:
            level = _tiff_level(path, dataset, level)
            dataset = None
        if dataset is not None and fmt not in _WITH_DATASETS:
            raise InputError(
                f"{path}: a {FORMAT_TITLES[fmt]} has no datasets (got dataset {dataset!r}); datasets apply to HDF5 and Zarr only"
            )
        if level is not None:
            if fmt not in _WITH_LEVELS:
                raise InputError(
                    f"{path}: a {FORMAT_TITLES[fmt]} has no pyramid levels (got level {level}); levels apply to TIFF/SVS and OME-Zarr"
                )
            if dataset is not None:
                raise InputError(
                    f"{path}: give either a dataset ({dataset!r}) or a pyramid level ({level}), not both"
                )
            if isinstance(level, bool) or not isinstance(level, int) or level < 0:
                raise InputError(
                    f"{path}: pyramid level {level!r} is not a level number; expected 0, 1, 2, ..."
                )
        if path.is_file():
            verify_content(path, fmt)
    except OSError as exc:  # a folder on the way, the file or the folder itself is not readable
        raise unreadable(path, exc) from exc
    reader = _backend(fmt, "read")
    options: dict[str, Any] = {"level": level} if level is not None else {}
    if grey and fmt == "tiff":
        options["grey"] = True  # refused before the pixels of a whole slide are read
    with library_errors(path, fmt):
        volume = reader(path, dataset=dataset, lazy=lazy, expect_ndim=expect_ndim, **options)
    if grey:
        check_grey(volume, str(path))
    # Readers check the shape before loading data; this catches any they could not.
    check_ndim(volume.spatial_shape, expect_ndim, str(path))
    stored = {"format": fmt, "dtype": volume.dtype.name, "shape": list(volume.shape)}
    if not volume.dtype.isnative:
        # Kept for `io info`; the data itself is handed on in native order.
        stored["byte_order"] = byte_order(volume.dtype)
        volume.data = native_order(volume.data)
    volume.metadata = {**stored, **volume.metadata}
    if not allow_nan:
        check_finite(volume, str(path))
    logger.debug("read %s: %s %s spacing %s", path, volume.shape, volume.dtype, volume.spacing)
    return volume


def _tiff_level(path: Path, dataset: str, level: int | None) -> int:
    """The pyramid level ``N`` named by ``slide.tif::N`` (TIFFs have no datasets)."""
    if not dataset.strip().isdigit():
        raise InputError(
            f"{path}: a TIFF file has no datasets (got {dataset!r}); datasets apply to HDF5 and Zarr only (TIFF::N selects pyramid level N)"
        )
    if level is not None and level != int(dataset):
        raise InputError(
            f"{path}: pyramid level {dataset} in the path and level={level} differ; give one"
        )
    return int(dataset)


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
    compression: str | None = None,
) -> Path:
    """Write an image or volume; the format follows the suffix of ``path``.

    ``.tif/.tiff`` multi-page TIFF, ``.h5/.hdf5/.nxs`` HDF5 (NeXus NXdata layout),
    ``.nii/.nii.gz`` NIfTI, ``.zarr`` Zarr, ``.dcm`` a single 2D DICOM file, no suffix
    a folder of TIFF slices (``format="dicom"``: a DICOM series). A ``(y, x, c)``
    colour image (``Volume.axes == "yxc"``) goes to TIFF (``.ome.tif``: OME-TIFF, tiled)
    or Zarr with its channels and pixel size. Dask arrays are
    written slab by slab without loading the whole volume. The output appears
    atomically: on failure nothing (not even a temporary) is left behind. Data is
    written in the machine's byte order; origin and direction go to every format
    that holds them (all but TIFF).

    Parameters
    ----------
    path : str or path-like
        Destination; ``file.h5::/group/dataset`` names the HDF5/Zarr dataset.
    volume : Volume or array-like
        What to write (numpy or dask array, ``(z, y, x)`` or ``(y, x)``; a colour
        image as a :class:`Volume` with ``axes="yxc"``).
    spacing : sequence of float, optional
        Voxel size in micrometres; defaults to ``volume.spacing`` (1.0 for arrays).
        A volume's origin and direction are kept either way.
    dataset : str, optional
        Dataset path in HDF5 (default ``/entry/data/data``) or Zarr (default: root).
    chunks : int or sequence of int, optional
        Chunk shape for HDF5 and Zarr (an int means that edge on every axis).
    dtype : numpy dtype, optional
        Cast to this type first; values outside its range raise :class:`InputError`.
    format : str, optional
        One of :data:`SUPPORTED_FORMATS`, overriding the suffix.
    compression : {"zstd", "lz4", "none"}, optional
        Zarr's Blosc codec: ``zstd`` (default, smallest), ``lz4`` (several times
        faster to write, for intermediate results such as noisy grey values that
        compress little anyway) or ``none``. Other formats keep their own.

    Returns
    -------
    pathlib.Path
        The written file or folder.
    """
    path, dataset = split_dataset(path, dataset)
    _check_format(format, path)
    fmt = format or detect_format(path, for_writing=True)
    if dataset is not None and fmt not in _WITH_DATASETS:
        raise InputError(
            f"{path}: a {FORMAT_TITLES[fmt]} has no datasets (got dataset {dataset!r}); datasets apply to HDF5 and Zarr only"
        )
    if not WRITABLE_DTYPES[fmt]:
        raise InputError(
            f"{path}: {FORMAT_TITLES[fmt]}s are read, not written; expected an output .tif, .ome.tif or .zarr (or another volume format)"
        )
    origin = direction = None
    if isinstance(volume, Volume):
        data, metadata, source, axes = volume.data, volume.metadata, volume.path, volume.axes
        spacing = volume.spacing if spacing is None else spacing
        origin, direction = volume.origin, volume.direction
    else:
        data, metadata, source = (volume if is_lazy(volume) else np.asarray(volume)), {}, None
        axes = ""
    axes = validate_axes(axes or None, data.ndim, f"data to write to {path}")
    n_spatial = data.ndim - ("c" in axes)
    check_ndim(data.shape[:n_spatial], (2, 3), f"data to write to {path}")
    if "c" in axes and fmt not in CHANNEL_FORMATS:
        raise InputError(
            f"{path}: a {FORMAT_TITLES[fmt]} cannot hold a colour/multi-channel image here; expected an output .tif, .ome.tif or .zarr "
            "(or convert to grey first: `mdlma io convert IN OUT --grey`)"
        )
    spacing = validate_spacing(
        (1.0,) * n_spatial if spacing is None else spacing, n_spatial, str(path)
    )
    if "c" in axes and (chunks is None or isinstance(chunks, int)):
        # Channels stay together in every chunk: one pixel's colour is read as one.
        spatial = (chunks,) * n_spatial if chunks else default_chunks(data.shape[:n_spatial])
        chunks = (*spatial, int(data.shape[-1]))
    if compression is not None and compression not in ZARR_COMPRESSIONS:
        raise InputError(
            f"compression: expected one of {', '.join(ZARR_COMPRESSIONS)}, got {compression!r}",
            field="compression",
        )
    if isinstance(chunks, int):
        chunks = (chunks,) * int(data.ndim)
    if chunks is not None and (len(chunks) != data.ndim or min(chunks) < 1):
        raise InputError(f"{path}: chunks {tuple(chunks)} must be {data.ndim} positive sizes")
    if dtype is not None:
        data = _cast(data, np.dtype(dtype), path)
    if not np.dtype(data.dtype).isnative:
        data = data.astype(
            np.dtype(data.dtype).newbyteorder("=")
        )  # a copy: the caller's array stays as it is
    if data.dtype == np.bool_ and "bool" not in WRITABLE_DTYPES[fmt]:
        data = data.astype(np.uint8)
    if np.dtype(data.dtype).name not in WRITABLE_DTYPES[fmt]:
        raise InputError(
            f"{path}: a {FORMAT_TITLES[fmt]} cannot store dtype {data.dtype}; expected one of "
            f"{', '.join(WRITABLE_DTYPES[fmt])} (convert with dtype=)"
        )
    volume = Volume(data, spacing, metadata, source, origin, direction, axes)
    writer = _backend(fmt, "write")
    with atomic_path(path) as tmp:
        options = {"compression": compression} if compression and fmt == "zarr" else {}
        writer(tmp, volume, dataset=dataset, chunks=chunks, name=str(path), **options)
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
