"""TIFF: one multi-page file, or a folder of 2D slices (``slice_00000.tif`` ...).

Voxel size is written where ImageJ/Fiji looks for it (ImageJ ``unit``/``spacing`` plus
X/YResolution rationals) for the data types ImageJ knows, and as tifffile "shaped"
JSON metadata plus centimetre resolution tags for the others. Reading also understands
OME-TIFF ``PhysicalSize*`` attributes and plain resolution tags in inch or centimetre.

Lazy reading memory-maps uncompressed contiguous data and otherwise reads page by page
(tifffile's ``aszarr`` needs zarr 3, and the framework pins zarr < 3).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ._common import exact_decimal, jsonable, rational, to_micrometres, unit_factor
from .formats import TIFF_SLICE_SUFFIXES, folder_slices, library_errors, one_line
from .volume import Volume, byte_order, check_memory, check_ndim, iter_slabs, slices_per_slab

# Data types ImageJ opens natively; others are written as tifffile "shaped" TIFF.
IMAGEJ_DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "int16", "float32")}
# Tags that locate data in the file: meaningless once the volume is read.
_LAYOUT_TAGS = {
    "StripOffsets",
    "StripByteCounts",
    "TileOffsets",
    "TileByteCounts",
    "ImageDescription",
}
# Leave room for IFDs below the classic TIFF 4 GiB limit.
_BIGTIFF_BYTES = 2**32 - 2**25


# ----------------------------------------------------------------------------- reading
logger = logging.getLogger(__name__)
_intercepted = threading.local()


class _Intercept(logging.Filter):
    """Keep tifffile's log records of the current thread's :func:`tifffile_errors` block.

    They are evidence of corruption (ERROR) or remarks (WARNING) about a file whose
    outcome is not known yet; printed at once they would precede the error message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        blocks = getattr(_intercepted, "blocks", None)
        if not blocks or record.levelno < logging.WARNING:
            return True
        blocks[-1].append(record)
        return False


logging.getLogger("tifffile").addFilter(_Intercept())


@contextlib.contextmanager
def tifffile_errors(path: Path, part: str = "") -> Iterator[None]:
    """Raise :class:`InputError` for corruption that tifffile only logs.

    tifffile logs broken IFD chains and data beyond the end of the file at ERROR level
    and carries on with what it could read; a truncated stack would pass as a shorter
    one (or fail a later check, e.g. as "2 dimensions"), so a logged error wins over any
    exception of the block. Its log lines are held back: warnings are logged once the
    block succeeds, errors become the message. ``part`` (e.g. ``"slice 7"``) says where.
    """
    records: list[logging.LogRecord] = []
    blocks = _intercepted.__dict__.setdefault("blocks", [])
    blocks.append(records)
    try:
        yield
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
        if errors:
            raise _corrupt(path, part, errors[0]) from exc
        raise
    finally:
        blocks.pop()
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    if errors:
        raise _corrupt(path, part, errors[0])
    for record in records:
        logger.warning("%s: %s", path, record.getMessage())


def _corrupt(path: Path, part: str, message: str) -> InputError:
    detail = " ".join(message.split()).replace(f"<tifffile.TiffFile '{path.name}'> ", "")
    where = f" ({part})" if part else ""
    return InputError(
        f"{path}: corrupt or truncated TIFF{where} ({detail[:200]}); expected a complete, valid TIFF file"
    )


def read_tiff(
    path: Path,
    dataset: str | None,
    lazy: bool,
    expect_ndim: Any,
    level: int | None = None,
    grey: bool = False,
) -> Volume:
    """Read the first image series of a TIFF file (ImageJ, OME and shaped TIFFs included).

    2D colour, multi-channel and pyramidal images (and any ``level``) are read by
    :func:`._image2d.read_tiff_image` as ``(y, x[, c])``; with ``grey`` a colour image
    is refused before its data is read.
    """
    import tifffile

    keep_open = False
    with tifffile_errors(path):
        tif = tifffile.TiffFile(path)
    try:
        with tifffile_errors(path):
            series = tif.series[0]
            from ._image2d import is_image2d, read_tiff_image

            if level is not None or is_image2d(series):
                volume, keep_open = read_tiff_image(
                    path, tif, series, level, lazy, expect_ndim, grey
                )
                return volume
            _check_channels(path, series.axes)
            check_ndim(series.shape, expect_ndim, str(path))
            _check_complete(path, tif, series)
            spacing = _spacing(tif, series.ndim)
            metadata = _metadata(tif, series)
            if lazy:
                data, keep_open = _lazy_series(path, tif, series)
            else:
                check_memory(series.shape, series.dtype, str(path))
                try:
                    data = series.asarray()
                except Exception:
                    # Name the slice, as a lazy read does (only on this error path: page by
                    # page is slower than tifffile's own loop).
                    for index, page in enumerate(series.pages if len(series.pages) > 1 else ()):
                        _read_page(path, page, index)
                    raise
    finally:
        if not keep_open:
            tif.close()
    return Volume(data, spacing, metadata, path)


def _check_channels(
    path: Path,
    axes: str,
    expected: str = "a 2D colour image (Y, X, channels) or a single-channel 2D image or 3D volume",
) -> None:
    if "S" in axes or "C" in axes:
        raise InputError(f"{path}: has colour/channel axes (axes {axes}); expected {expected}")


def _check_complete(path: Path, tif: Any, series: Any) -> None:
    """Raise :class:`InputError` if the file ends before the data or IFDs it announces."""
    size = path.stat().st_size
    page_shape = series.keyframe.shape
    expected_pages = int(np.prod(series.shape)) // max(1, int(np.prod(page_shape)))
    if len(tif.pages) < expected_pages:
        raise InputError(
            f"{path}: truncated TIFF: {len(tif.pages)} of {expected_pages} pages present; expected a complete file"
        )
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        end = max(
            (
                int(o) + int(c)
                for page in series.pages
                if page is not None
                for o, c in zip(page.dataoffsets, page.databytecounts)
            ),
            default=0,
        )
    if end > size:
        raise InputError(
            f"{path}: truncated TIFF: data ends at byte {end} but file has {size} bytes; expected a complete file"
        )


def _lazy_series(path: Path, tif: Any, series: Any) -> tuple[Any, bool]:
    """A dask array over the series, and whether it needs ``tif`` to stay open."""
    import dask
    import dask.array as da

    per_chunk = slices_per_slab(series.shape, series.dtype)
    if series.dataoffset is not None:
        # Uncompressed and contiguous (what write_tiff produces): a read-only memory map.
        dtype = series.dtype.newbyteorder(tif.byteorder)
        mm = np.memmap(path, dtype=dtype, mode="r", offset=series.dataoffset, shape=series.shape)
        return da.from_array(mm, chunks=(per_chunk,) + mm.shape[1:], name=False), False
    pages = series.pages
    if len(pages) != series.shape[0] or tuple(series.keyframe.shape) != tuple(series.shape[1:]):
        # Data not stored as one 2D page per slice (e.g. a single tiled 3D page).
        return da.from_delayed(dask.delayed(series.asarray)(), series.shape, series.dtype), True
    lock = threading.Lock()  # pages share the open file handle

    def read_page(index: int) -> np.ndarray:
        with lock:
            return _read_page(path, pages[index], index)

    shape = series.shape[1:]
    slices = [
        da.from_delayed(dask.delayed(read_page)(i), shape, series.dtype)
        for i in range(series.shape[0])
    ]
    return da.stack(slices), True


def _read_page(path: Path, page: Any, index: int) -> np.ndarray:
    """Slice ``index`` of a stack; an unreadable page is named in the :class:`InputError`."""
    with tifffile_errors(path, f"slice {index}"):
        try:
            return page.asarray()
        except Exception as exc:
            raise InputError(
                f"{path}: slice {index} cannot be read ({one_line(exc)}); expected a complete, valid TIFF file"
            ) from exc


def _spacing_known(tif: Any) -> bool:
    """Whether the file gives a voxel size at all (OME, ImageJ, shaped or resolution tags)."""
    sources = (_ome_spacing, _imagej_spacing, _shaped_spacing, _resolution_spacing)
    return any(source(tif) is not None for source in sources)


def _spacing(tif: Any, ndim: int) -> tuple[float, ...]:
    """Voxel size in micrometres, last ``ndim`` axes; 1.0 where the file says nothing."""
    for source in (_ome_spacing, _imagej_spacing, _shaped_spacing, _resolution_spacing):
        found = source(tif)
        if found is not None:
            values = [1.0] * max(0, ndim - len(found)) + list(found)
            return tuple(values[-ndim:])
    return (1.0,) * ndim


def _ome_spacing(tif: Any) -> tuple[float, ...] | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    root = ElementTree.fromstring(tif.ome_metadata)
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    values = []
    for axis in "ZYX":
        size = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        values.append(
            to_micrometres(size, unit) if size is not None and unit_factor(unit) else None
        )
    if values[1] is None and values[2] is None:
        return None
    return tuple(1.0 if v is None else v for v in values)


def _xy_resolution(tif: Any) -> tuple[Fraction, Fraction] | None:
    """Size of one pixel (y, x) in the resolution unit, from the rational tags."""
    tags = tif.pages.first.tags
    try:
        (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
    except (KeyError, TypeError, ValueError):
        return None
    if not (xn and yn and xd and yd):
        return None
    return Fraction(int(yd), int(yn)), Fraction(int(xd), int(xn))


def _imagej_spacing(tif: Any) -> tuple[float, ...] | None:
    meta = tif.imagej_metadata
    if not meta:
        return None
    unit = meta.get("unit")
    if not unit_factor(unit):
        return None
    pixel = _xy_resolution(tif)
    y, x = (to_micrometres(p, unit) for p in pixel) if pixel else (1.0, 1.0)
    z = to_micrometres(meta["spacing"], unit) if "spacing" in meta else 1.0
    return z, y, x


def _shaped_spacing(tif: Any) -> tuple[float, ...] | None:
    meta = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else None
    if not meta or "spacing" not in meta:
        return None
    unit = meta.get("unit", "um")
    if not unit_factor(unit):
        return None
    return tuple(to_micrometres(s, unit) for s in meta["spacing"])


def _resolution_spacing(tif: Any) -> tuple[float, ...] | None:
    unit = {2: "inch", 3: "cm"}.get(int(tif.pages.first.tags.valueof("ResolutionUnit", 1)))
    pixel = _xy_resolution(tif)
    if unit is None or pixel is None:
        return None
    return tuple(to_micrometres(p, unit) for p in pixel)


def _metadata(tif: Any, series: Any) -> dict[str, Any]:
    tags = {
        tag.name: value
        for tag in tif.pages.first.tags
        if tag.name not in _LAYOUT_TAGS and (value := jsonable(tag.value)) is not None
    }
    metadata: dict[str, Any] = {
        "axes": series.axes,
        "tags": tags,
        "spacing_known": _spacing_known(tif),
    }
    stored = np.dtype(series.dtype).newbyteorder(tif.byteorder)
    if not stored.isnative:  # tifffile swaps to native order: say what the file holds
        metadata["byte_order"] = byte_order(stored)
    if tif.imagej_metadata:
        metadata["imagej"] = jsonable(tif.imagej_metadata)
    if tif.is_shaped and tif.shaped_metadata:
        metadata["shaped"] = jsonable(tif.shaped_metadata[0])
    if tif.is_ome:
        metadata["ome"] = True
    return metadata


def read_tiff_folder(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Stack a folder of 2D TIFF slices (sorted naturally by name) into a volume."""
    import tifffile

    files = folder_slices(path, TIFF_SLICE_SUFFIXES)
    if not files:
        raise InputError(
            f"{path}: folder holds no *.tif/*.tiff slices; expected a folder of 2D TIFF slices"
        )
    check_ndim((len(files), 0, 0), expect_ndim, str(path))
    shape = dtype = None
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)
    metadata: dict[str, Any] = {}
    for index, file in enumerate(files):
        # Only headers here: every slice must match the first before any data is read.
        with library_errors(file, "tiff"), tifffile_errors(file), tifffile.TiffFile(file) as tif:
            series = tif.series[0]
            if index == 0:
                _check_channels(file, series.axes, "single-channel 2D slices")
                check_ndim(series.shape, 2, str(file))
                shape, dtype = series.shape, series.dtype
                spacing = _spacing(tif, 3)
                metadata = {
                    "slices": len(files),
                    "first_slice": file.name,
                    **_metadata(tif, series),
                }
            elif series.shape != shape or series.dtype != dtype:
                raise InputError(
                    f"{path}: slice {file.name} is {'x'.join(map(str, series.shape))} {series.dtype} but "
                    f"{files[0].name} is {'x'.join(map(str, shape or ()))} {dtype}; expected slices of equal shape and dtype"
                )
    assert shape is not None  # set by the first of the (non-empty) files
    if lazy:
        import dask
        import dask.array as da

        read = dask.delayed(_read_slice)
        data = da.stack([da.from_delayed(read(f), shape, dtype) for f in files])
    else:
        check_memory((len(files),) + tuple(shape), dtype, str(path))
        data = np.empty((len(files),) + tuple(shape), dtype)
        for index, file in enumerate(
            tqdm(files, desc=f"reading {path.name}", unit="slice", disable=None, leave=False)
        ):
            data[index] = _read_slice(file)
    return Volume(data, spacing, metadata, path)


def _read_slice(file: Path) -> np.ndarray:
    import tifffile

    with library_errors(file, "tiff"), tifffile_errors(file):
        return tifffile.imread(file)


# ----------------------------------------------------------------------------- writing
def _tiff_options(volume: Volume, imagej: bool, slice_of_volume: bool = False) -> dict[str, Any]:
    """tifffile keyword arguments that record the voxel size of ``volume``."""
    spacing = [exact_decimal(s) for s in volume.spacing]
    dy, dx = spacing[-2:]
    if imagej:
        metadata: dict[str, Any] = {"unit": "um"}
        if volume.ndim == 3:
            metadata["spacing"] = float(spacing[0])
        if not slice_of_volume:
            metadata["axes"] = "ZYX"[-volume.ndim :]
        return {
            "imagej": True,
            "metadata": metadata,
            "resolution": (rational(1 / Fraction(dx)), rational(1 / Fraction(dy))),
        }
    per_cm = Fraction(10000)
    return {
        "metadata": {"spacing": [float(s) for s in spacing], "unit": "um"}
        | ({} if slice_of_volume else {"axes": "ZYX"[-volume.ndim :]}),
        "resolution": (rational(per_cm / Fraction(dx)), rational(per_cm / Fraction(dy))),
        "resolutionunit": "CENTIMETER",
    }


def write_tiff(
    path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str
) -> None:
    """Write one multi-page TIFF, slab by slab; BigTIFF (not ImageJ) above ~4 GiB."""
    import tifffile

    if "c" in volume.axes:
        from ._image2d import write_tiff_channels

        write_tiff_channels(path, volume, name)
        return
    data = volume.data
    bigtiff = data.nbytes >= _BIGTIFF_BYTES
    options = _tiff_options(volume, imagej=data.dtype in IMAGEJ_DTYPES and not bigtiff)
    imagej = options.pop("imagej", False)

    def pages():
        for _, _, block in iter_slabs(data, desc=f"writing {name}"):
            yield from block

    with tifffile.TiffWriter(path, bigtiff=bigtiff, imagej=imagej) as writer:
        if data.ndim == 2:
            writer.write(np.asarray(data), photometric="minisblack", **options)
        else:
            writer.write(
                pages(), shape=data.shape, dtype=data.dtype, photometric="minisblack", **options
            )


def write_tiff_folder(
    path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str
) -> None:
    """Write ``slice_00000.tif``, ``slice_00001.tif`` ... into the folder ``path``."""
    import tifffile

    data = volume.data
    if data.ndim == 2:
        data = data[None]
        volume = Volume(data, (1.0,) + tuple(volume.spacing))
    options = _tiff_options(volume, imagej=data.dtype in IMAGEJ_DTYPES, slice_of_volume=True)
    width = max(5, len(str(data.shape[0] - 1)))
    path.mkdir()
    for start, _, block in iter_slabs(data, desc=f"writing {name}"):
        for offset, image in enumerate(block):
            tifffile.imwrite(
                path / f"slice_{start + offset:0{width}d}.tif",
                image,
                photometric="minisblack",
                **options,
            )
