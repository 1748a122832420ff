"""Grey conversion and stain separation of ``(y, x, c)`` images with scikit-image.

Both work on in-memory and lazy (dask) volumes; lazy data stays lazy, converted tile
by tile. The pixel size and source metadata are kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..io.volume import Volume

#: Stain sets of :func:`skimage.color.separate_stains` (``<name>_from_rgb`` matrices)
#: and the channel each output plane holds, after Ruifrok & Johnston and G. Landini.
STAINS: dict[str, tuple[str, str, str]] = {
    "hed": ("hematoxylin", "eosin", "DAB"),
    "hdx": ("hematoxylin", "DAB", "residual"),
    "fgx": ("Feulgen", "light green", "residual"),
    "bex": ("methyl blue", "eosin", "residual"),
    "rbd": ("FastRed", "FastBlue", "DAB"),
    "gdx": ("methyl green", "DAB", "residual"),
    "hax": ("hematoxylin", "AEC", "residual"),
    "bro": ("aniline blue", "azocarmine", "orange G"),
    "bpx": ("methyl blue", "ponceau fuchsin", "residual"),
    "ahx": ("alcian blue", "hematoxylin", "residual"),
    "hpx": ("hematoxylin", "PAS", "residual"),
}


def to_grey(volume: Volume, channel: int | None = None) -> Volume:
    """Return the grey-value version of a colour or multi-channel image.

    RGB and RGBA images become their luminance (:func:`skimage.color.rgb2gray`,
    ``0.2125 R + 0.7154 G + 0.0721 B``; alpha is ignored) as float32 in 0..1, integer
    data scaled by the maximum of its type as scikit-image does. ``channel`` instead
    picks one channel as it is (any channel count, dtype kept). Grey input is
    returned unchanged.

    Parameters
    ----------
    volume : Volume
        A ``(y, x, c)`` image (``axes="yxc"``), in memory or lazy.
    channel : int, optional
        Index of the channel to keep instead of computing the luminance.

    Returns
    -------
    Volume
        ``(y, x)`` image with the same pixel size, metadata and path.

    Raises
    ------
    InputError
        If ``channel`` does not exist, or without ``channel`` the image has neither
        3 nor 4 channels (nor 1).

    Examples
    --------
    >>> import numpy as np
    >>> from unified_framework.io import Volume
    >>> rgb = Volume(np.full((2, 3, 3), 255, np.uint8), spacing=(0.5, 0.5), axes="yxc")
    >>> grey = to_grey(rgb)
    >>> grey.axes, grey.shape, grey.spacing, float(grey.data.max())
    ('yx', (2, 3), (0.5, 0.5), 1.0)
    """
    if "c" not in volume.axes:
        if channel is not None:
            raise InputError(
                f"{_name(volume)}: is a grey image, it has no channel {channel}; expected a colour/multi-channel image"
            )
        return volume
    n = volume.channels
    if channel is not None:
        if not -n <= channel < n:
            raise InputError(
                f"{_name(volume)}: has {n} channels, no channel {channel}; expected 0..{n - 1}"
            )
        return _derive(volume, volume.data[..., channel], "yx", {"grey": f"channel {channel % n}"})
    if n == 1:
        return _derive(volume, volume.data[..., 0], "yx", {"grey": "channel 0"})
    if n not in (3, 4):
        raise InputError(
            f"{_name(volume)}: has {n} channels; expected RGB (3) or RGBA (4) for a luminance, or choose one channel (channel=, --channel)"
        )
    from skimage.color import rgb2gray

    def grey(block: np.ndarray) -> np.ndarray:
        return rgb2gray(block[..., :3]).astype(np.float32)

    return _derive(
        volume,
        _per_pixel(volume.data, grey, None),
        "yx",
        {"grey": "luminance (skimage.color.rgb2gray)"},
    )


def separate_stains(volume: Volume, stains: str = "hed") -> Volume:
    """Separate the stains of a bright-field RGB image by colour deconvolution.

    Uses :func:`skimage.color.separate_stains` with scikit-image's stain matrix
    ``<stains>_from_rgb`` (``"hed"`` is :func:`skimage.color.rgb2hed`: hematoxylin,
    eosin, DAB). Each output channel is the optical density of one stain (float32);
    ``metadata["channels"]`` names them (see :data:`STAINS`). An alpha channel is
    ignored.

    Parameters
    ----------
    volume : Volume
        An RGB or RGBA ``(y, x, c)`` image, in memory or lazy.
    stains : str
        One of the keys of :data:`STAINS`.

    Returns
    -------
    Volume
        ``(y, x, 3)`` image with the same pixel size.

    Raises
    ------
    InputError
        If the stain set is unknown or the image is not RGB/RGBA.

    Examples
    --------
    >>> from skimage import data
    >>> from unified_framework.io import Volume
    >>> ihc = Volume(data.immunohistochemistry(), spacing=(0.5, 0.5), axes="yxc")
    >>> hed = separate_stains(ihc, "hed")
    >>> hed.shape, hed.metadata["channels"]
    ((512, 512, 3), ['hematoxylin', 'eosin', 'DAB'])
    """
    key = str(stains).lower()
    if key not in STAINS:
        raise InputError(f"stains {stains!r} unknown; expected one of {', '.join(STAINS)}")
    if "c" not in volume.axes or volume.channels not in (3, 4):
        what = f"{volume.channels} channels" if "c" in volume.axes else "a grey image"
        raise InputError(
            f"{_name(volume)}: has {what}; expected an RGB or RGBA image for stain separation"
        )
    import skimage.color

    matrix = getattr(skimage.color, f"{key}_from_rgb")

    def separate(block: np.ndarray) -> np.ndarray:
        return skimage.color.separate_stains(block[..., :3], matrix).astype(np.float32)

    extra = {"stains": key, "channels": list(STAINS[key])}
    return _derive(volume, _per_pixel(volume.data, separate, 3), "yxc", extra)


def _per_pixel(data: Any, func: Any, channels: int | None) -> Any:
    """Apply a per-pixel colour transform to numpy or dask data (all channels in one chunk)."""
    from ..io.volume import is_lazy

    if not is_lazy(data):
        return func(np.asarray(data))
    data = data.rechunk({2: -1})
    if channels is None:
        return data.map_blocks(func, drop_axis=2, dtype=np.float32)
    return data.map_blocks(func, chunks=data.chunks[:2] + ((channels,),), dtype=np.float32)


def _derive(volume: Volume, data: Any, axes: str, extra: dict[str, Any]) -> Volume:
    metadata = {**volume.metadata, **extra}
    if "shape" in metadata:  # what read_volume recorded describes the source
        metadata.update(dtype=str(data.dtype), shape=[int(n) for n in data.shape])
    return Volume(
        data, volume.spacing, metadata, volume.path, volume.origin, volume.direction, axes
    )


def _name(volume: Volume) -> str:
    return str(volume.path or "image")
