"""2D colour, multi-channel and pyramidal images: PNG, JPEG and 2D TIFF/OME-TIFF/SVS.

Colour and multi-channel images are returned as ``(y, x, c)`` with ``axes="yxc"`` and
the pixel size ``(dy, dx)`` in micrometres. Pyramidal TIFFs (OME-TIFF SubIFDs, Aperio
SVS, reduced-resolution pages) give one level; ``metadata["levels"]`` lists all.

Lazy reading decodes one TIFF tile (or strip) per dask chunk with tifffile's own
decoder (``TiffPage.decode``), so a region of a whole-slide image larger than memory
reads only the tiles it touches. tifffile's ``aszarr`` store would do the same but
needs zarr 3, and the framework pins zarr < 3 (see ``docs/io.md``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._common import exact_decimal, jsonable, rational
from ._tiff import _metadata, _spacing, tifffile_errors
from .formats import library_errors
from .volume import Volume, check_grey, check_ndim, iter_slabs, slices_per_slab

#: Edge of the tiles :func:`write_tiff_channels` writes (a multiple of 16, as TIFF requires).
TILE = 256


# ----------------------------------------------------------------------------- PNG / JPEG
def read_png(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Read a PNG: grey ``(y, x)`` or colour ``(y, x, c)``; pixel size from ``pHYs``."""
    return _read_pillow(path, lazy, expect_ndim)


def read_jpeg(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Read a JPEG: grey ``(y, x)`` or RGB ``(y, x, 3)``; pixel size from the JFIF density."""
    return _read_pillow(path, lazy, expect_ndim)


def _read_pillow(path: Path, lazy: bool, expect_ndim: Any) -> Volume:
    # Pillow is a dependency of scikit-image (which the framework requires).
    from PIL import Image

    with Image.open(path) as opened:
        image: Image.Image = opened
        if image.mode == "P":
            # Palette images: expand to the colours they show.
            image = opened.convert("RGBA" if "transparency" in opened.info else "RGB")
        elif image.mode == "CMYK":
            image = opened.convert("RGB")
        elif image.mode == "1":
            image = opened.convert("L")
        if image.format == "PNG" and image.mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
            raise InputError(
                f"{path}: 16-bit colour PNG cannot be read without losing precision (Pillow reduces it to 8 bits); expected an 8-bit PNG or a TIFF"
            )
        data = np.asarray(image)
        info, fmt, mode = dict(image.info), image.format, image.mode
    axes = "yxc" if data.ndim == 3 else "yx"
    check_ndim(data.shape[:2], expect_ndim, str(path))
    if lazy:
        import dask.array as da

        data = da.from_array(data, chunks=data.shape, name=False)
    # Binary profiles are left out; what remains (dpi, gamma, text chunks) is small.
    metadata = {
        "mode": mode,
        "info": jsonable({k: v for k, v in info.items() if k not in ("icc_profile", "exif")}) or {},
    }
    spacing = _pillow_spacing(info, fmt)
    metadata["spacing_known"] = spacing is not None
    return Volume(data, spacing or (1.0, 1.0), metadata, path, axes=axes)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        header = f.read(25)
    return header[24] if len(header) == 25 else 8


def _pillow_spacing(info: dict[Any, Any], fmt: str | None) -> tuple[float, float] | None:
    """Pixel size (y, x) in µm from Pillow's ``dpi``; None where the file gives none.

    PNG ``pHYs`` stores whole pixels per metre, which Pillow turns into dots per inch;
    rounding back to pixels per metre gives the exact size (2000000/m -> 0.5 µm).
    """
    try:
        # JPEG EXIF gives rationals (IFDRational), PNG and JFIF plain numbers.
        dpi = [float(d) for d in info["dpi"]]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if len(dpi) != 2 or not all(math.isfinite(d) and d > 0 for d in dpi):
        return None
    sizes = []
    for value in (dpi[1], dpi[0]):
        if fmt == "PNG":
            sizes.append(float(Decimal(10**6) / Decimal(max(1, round(value / 0.0254)))))
        else:
            sizes.append(float(Decimal(25400) / exact_decimal(value)))
    return sizes[0], sizes[1]


# ----------------------------------------------------------------------------- TIFF
def is_image2d(series: Any) -> bool:
    """True if a TIFF series is a 2D colour/multi-channel image or a 2D pyramid."""
    axes = series.axes
    spatial = axes.replace("S", "").replace("C", "")
    return spatial == "YX" and (axes != "YX" or len(series.levels) > 1)


def read_tiff_image(
    path: Path,
    tif: Any,
    series: Any,
    level: int | None,
    lazy: bool,
    expect_ndim: Any,
    grey: bool = False,
) -> tuple[Volume, bool]:
    """Read one level of a 2D (colour, multi-channel or pyramidal) TIFF series.

    Returns the volume and whether ``tif`` must stay open (lazy tiles read from it).
    With ``grey`` a colour image is refused (:func:`check_grey`) before any pixel is
    read: a whole slide would not fit in memory.
    """
    axes = series.axes
    if axes.replace("S", "").replace("C", "") != "YX":
        raise InputError(
            f"{path}: pyramid levels apply to 2D images, this TIFF has axes {axes}; expected a 2D (colour) image"
        )
    if "S" in axes and "C" in axes:
        raise InputError(
            f"{path}: has both colour samples and channels (axes {axes}); expected one channel axis"
        )
    check_ndim(tuple(series.shape[axes.index(a)] for a in "YX"), expect_ndim, str(path))
    levels = series.levels
    index = 0 if level is None else level
    if not 0 <= index < len(levels):
        raise InputError(f"{path}: no pyramid level {index}; expected 0..{len(levels) - 1}")
    base_spacing = _tiff_pixel_size(tif)
    base = levels[0].shape
    described = [_describe_level(lv, axes, base, base_spacing) for lv in levels]
    chosen = levels[index]
    _check_codec(path, chosen.keyframe)
    order = [axes.index(a) for a in "YX"] + [i for i, a in enumerate(axes) if a in "SC"]
    _check_level_complete(path, chosen)
    keep_open = False
    if lazy or (grey and axes != "YX"):
        data, keep_open = _lazy_level(path, tif, chosen, axes, order)
    else:
        data = np.transpose(chosen.asarray(), order)
    out_axes = "yx" if axes == "YX" else "yxc"
    metadata = _metadata(tif, series)
    if len(levels) > 1:
        metadata["level"] = index
        metadata["levels"] = described
    if tif.is_svs:
        metadata["svs"] = jsonable(_svs_metadata(tif)) or {}
        mpp = metadata["svs"].get("MPP")
        metadata["spacing_known"] |= isinstance(mpp, (int, float)) and mpp > 0
    spacing = tuple(described[index]["spacing_um"])
    volume = Volume(data, spacing, metadata, path, axes=out_axes)
    if grey:
        check_grey(volume, str(path))
    return volume, keep_open


def _describe_level(
    level: Any, axes: str, base: tuple[int, ...], base_spacing: tuple[float, float]
) -> dict[str, Any]:
    """Shape ``(y, x[, c])`` and pixel size of a pyramid level (scaled from level 0)."""
    yx = [axes.index("Y"), axes.index("X")]
    shape = [int(level.shape[i]) for i in yx] + [
        int(level.shape[i]) for i, a in enumerate(axes) if a in "SC"
    ]
    spacing = [float(exact_decimal(s) * base[i] / level.shape[i]) for s, i in zip(base_spacing, yx)]
    return {"shape": shape, "spacing_um": spacing}


def _tiff_pixel_size(tif: Any) -> tuple[float, float]:
    """Pixel size (y, x) of level 0: Aperio ``MPP`` for SVS, else as for any TIFF."""
    if tif.is_svs:
        mpp = _svs_metadata(tif).get("MPP")
        if isinstance(mpp, (int, float)) and mpp > 0:
            return float(mpp), float(mpp)
    dy, dx = _spacing(tif, 2)
    return dy, dx


def _svs_metadata(tif: Any) -> dict[str, Any]:
    # Public in tifffile's module, not re-exported by the package.
    from tifffile.tifffile import svs_description_metadata

    try:
        return svs_description_metadata(tif.pages.first.description)
    except ValueError:
        return {}


def _check_codec(path: Path, page: Any) -> None:
    """Refuse compressions that need the optional ``imagecodecs`` package, before reading.

    Without it tifffile decodes only uncompressed, Deflate/zlib and PackBits data; the
    JPEG and JPEG 2000 tiles of most scanners' slides and LZW need imagecodecs.
    """
    from tifffile import TIFF

    if page.compression not in TIFF.DECOMPRESSORS:
        name = getattr(page.compression, "name", str(page.compression))
        raise InputError(
            f"{path}: image data is {name}-compressed, which needs the 'imagecodecs' package (not installed); "
            "expected uncompressed or Deflate TIFF data, or install imagecodecs"
        )


def _check_level_complete(path: Path, level: Any) -> None:
    size = path.stat().st_size
    for page in level.pages:
        if page is None:
            raise InputError(
                f"{path}: truncated TIFF: a page of the image is missing; expected a complete file"
            )
        end = max(
            (int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts)), default=0
        )
        if end > size:
            raise InputError(
                f"{path}: truncated TIFF: data ends at byte {end} but file has {size} bytes; expected a complete file"
            )


def _lazy_level(path: Path, tif: Any, level: Any, axes: str, order: list[int]) -> tuple[Any, bool]:
    """A dask array ``(y, x[, c])`` over a level, one chunk per TIFF tile or strip."""
    import dask
    import dask.array as da

    pages = list(level.pages)
    key = level.keyframe
    if level.dataoffset is not None:
        # Uncompressed and contiguous (one strip): a read-only memory map, in row slabs.
        mm = np.memmap(
            path,
            dtype=level.dtype.newbyteorder(tif.byteorder),
            mode="r",
            offset=level.dataoffset,
            shape=level.shape,
        )
        data = da.from_array(
            mm, chunks=(slices_per_slab(level.shape, level.dtype),) + level.shape[1:], name=False
        )
        # Native byte order chunk by chunk, as the eager path and the tile decoder give it.
        return da.transpose(data.astype(level.dtype.newbyteorder("=")), order), False
    tiled = (
        key.planarconfig == 1
        and key.shaped[:2] == (1, 1)
        and all(p.keyframe is key or p.keyframe.shape == key.shape for p in pages)
    )
    if not tiled or axes not in ("YX", "YXS", "CYX") or (axes == "CYX") != (len(pages) > 1):
        # Planar or 3D tiles: one delayed read of the whole level (still nothing read now).
        whole = da.from_delayed(dask.delayed(level.asarray)(), level.shape, level.dtype)
        return da.transpose(whole, order), True
    lock = threading.Lock()  # tiles share the open file handle
    arrays = [
        da.from_array(
            _Tiles(path, tif, page, lock),
            chunks=_Tiles.chunk_shape(page),
            name=False,
            asarray=False,
        )
        for page in pages
    ]
    if axes == "CYX":
        return da.stack(arrays, axis=-1), True
    return arrays[0], True


class _Tiles:
    """Array-like over one tiled (or striped) TIFF page: slicing decodes only the tiles hit.

    Used through :func:`dask.array.from_array` with :meth:`chunk_shape` chunks, so that
    each dask chunk is one tile. The bytes come from tifffile's file handle and are
    decoded by tifffile (``TiffPage.decode``), whatever the compression.
    """

    def __init__(self, path: Path, tif: Any, page: Any, lock: threading.Lock) -> None:
        self.path, self.tif, self.page, self.lock = path, tif, page, lock
        key = page.keyframe
        self.shape = tuple(int(n) for n in key.shape)
        self.dtype = np.dtype(key.dtype)
        self.ndim = len(self.shape)
        self.tile = (int(key.chunks[0]), int(key.chunks[1]))
        self.across = int(key.chunked[1])

    @staticmethod
    def chunk_shape(page: Any) -> tuple[int, ...]:
        key = page.keyframe
        return (int(key.chunks[0]), int(key.chunks[1])) + tuple(int(n) for n in key.shape[2:])

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        if not all(isinstance(k, slice) for k in key[:2]):
            return self[(slice(None), slice(None))][key]
        (y0, y1, ystep), (x0, x1, xstep) = (
            key[0].indices(self.shape[0]),
            key[1].indices(self.shape[1]),
        )
        if ystep != 1 or xstep != 1:
            return self[(slice(None), slice(None))][key]
        y1, x1 = max(y0, y1), max(x0, x1)
        out = np.empty((y1 - y0, x1 - x0) + self.shape[2:], self.dtype)
        th, tw = self.tile
        for row in range(y0 // th, -(-y1 // th)):
            for col in range(x0 // tw, -(-x1 // tw)):
                tile = self._tile(row * self.across + col)
                ty, tx = row * th, col * tw
                ya, yb, xa, xb = (
                    max(y0, ty),
                    min(y1, ty + tile.shape[0]),
                    max(x0, tx),
                    min(x1, tx + tile.shape[1]),
                )
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = tile[
                    ya - ty : yb - ty, xa - tx : xb - tx
                ]
        return out[(slice(None), slice(None)) + key[2:]]

    def _tile(self, index: int) -> np.ndarray:
        page, key = self.page, self.page.keyframe
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        shape = self.tile + self.shape[2:]
        if not offset or not count:
            # Tiles a scanner skipped (empty background) hold the fill value.
            return np.full(shape, key.nodata, self.dtype)
        with library_errors(self.path, "tiff"), tifffile_errors(self.path):
            with self.lock:
                handle = self.tif.filehandle
                handle.seek(offset)
                raw = handle.read(count)
            extra = {
                name: value
                for name in ("jpegtables", "jpegheader")
                if (value := getattr(page, name, None) or getattr(key, name, None)) is not None
            }
            decoded = key.decode(raw, index, **extra)[0]
            if decoded is None:
                raise ValueError(f"tile {index} could not be decoded")
        # tifffile gives (planes, rows, columns, samples); strips may be shorter than a tile.
        return decoded.reshape(decoded.shape[1:3] + self.shape[2:])


def write_tiff_channels(path: Path, volume: Volume, name: str) -> None:
    """Write a ``(y, x, c)`` image as a tiled TIFF (OME-TIFF if ``name`` ends ``.ome.tif[f]``).

    3 or 4 channels of uint8/uint16 are written as RGB(A), others as contiguous
    samples of a grey image; the pixel size goes into the resolution tags (cm) and
    the OME ``PhysicalSizeX/Y`` or the tifffile "shaped" JSON.
    """
    import tifffile

    data = volume.data
    dy, dx = (exact_decimal(s) for s in volume.spacing)
    rgb = volume.channels in (3, 4) and np.dtype(data.dtype) in (np.uint8, np.uint16)
    ome = name.lower().endswith((".ome.tif", ".ome.tiff"))
    if ome:
        metadata: dict[str, Any] = {
            "axes": "YXS",
            "PhysicalSizeY": float(dy),
            "PhysicalSizeX": float(dx),
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeXUnit": "µm",
        }
    else:
        metadata = {"axes": "YXS", "spacing": [float(dy), float(dx)], "unit": "um"}
    per_cm = Decimal(10000)
    bigtiff = data.nbytes >= 2**32 - 2**25
    with tifffile.TiffWriter(path, bigtiff=bigtiff, ome=ome) as writer:
        writer.write(
            _tiles(data, name),
            shape=tuple(data.shape),
            dtype=data.dtype,
            tile=(TILE, TILE),
            photometric="rgb" if rgb else "minisblack",
            planarconfig="contig",
            resolution=(rational(per_cm / dx), rational(per_cm / dy)),
            resolutionunit="CENTIMETER",
            metadata=metadata,
        )


def _tiles(data: Any, name: str) -> Iterator[np.ndarray]:
    """Tiles in TIFF order (rows of tiles, left to right), read slab by slab from ``data``."""
    for _, _, block in iter_slabs(data, step=TILE, desc=f"writing {name}"):
        for top in range(0, block.shape[0], TILE):
            band = block[top : top + TILE]
            for left in range(0, band.shape[1], TILE):
                yield band[:, left : left + TILE]
