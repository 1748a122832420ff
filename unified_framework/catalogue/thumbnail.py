"""A small 8-bit preview slice of a catalogued volume (for the dashboard's detail view)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .extract import dataset_path

if TYPE_CHECKING:
    from ..io import Volume


def thumbnail_slice(
    source: str | os.PathLike | dict,
    *,
    index: int | None = None,
    max_size: int = 256,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Read one axial slice and scale it to a ``uint8`` image of at most ``max_size`` pixels a side.

    Colour images are shown as their luminance (multi-channel ones by channel 0).

    Only that slice is read (the volume is opened lazily), so previews of large scans
    are cheap.

    Parameters
    ----------
    source : path-like or dict
        A volume path, or a catalogue dataset document (its ``path`` is used, and for
        HDF5 the array recorded at ingestion).
    index : int, optional
        Slice along ``z``; the middle slice by default. Ignored for 2-D images.
    max_size : int
        Longest side of the result; larger slices are subsampled by an integer step.
    percentiles : (float, float)
        Grey values at these percentiles map to 0 and 255 (robust to outliers).

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width)

    Raises
    ------
    InputError
        If the volume cannot be read or ``index`` is out of range.
    """
    from ..io import open_volume

    if isinstance(source, dict):
        source = dataset_path(source)
    volume = open_volume(str(source))  # str keeps a "file.h5::/array" reference whole
    if "c" in volume.axes:
        volume = _colour_preview(str(source), volume, max_size)
    data = volume.data
    if data.ndim == 3:
        depth = data.shape[0]
        index = depth // 2 if index is None else index
        if not -depth <= index < depth:
            raise InputError(f"{source}: slice {index} out of range; the volume has {depth} slices")
        data = data[index]
    step = max(1, -(-max(data.shape) // max_size))
    image = np.asarray(data[::step, ::step], dtype=np.float64)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    low, high = np.percentile(finite, percentiles)
    if high <= low:
        high = low + 1.0
    scaled = np.clip((np.nan_to_num(image, nan=low) - low) / (high - low), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def _colour_preview(source: str | os.PathLike, volume: Volume, max_size: int) -> Volume:
    """Grey preview of a colour image from the coarsest pyramid level still ``max_size`` wide.

    Subsampling level 0 of a whole-slide image would decode every tile of it.
    """
    from ..image import to_grey
    from ..io import open_volume

    levels = volume.metadata.get("levels") or []
    big_enough = [i for i, level in enumerate(levels) if max(level["shape"][:2]) >= max_size]
    if big_enough and big_enough[-1] != volume.metadata.get("level"):
        volume = open_volume(os.fspath(source), level=big_enough[-1])
    return to_grey(volume) if volume.channels in (3, 4) else to_grey(volume, channel=0)
