"""A fluorescence-like image of touching, irregular nuclei with instance masks (2D or 3D).

For StarDist and the instance scores (``unified_framework.metrics.instance``): nuclei
are star-convex blobs (ellipses or ellipsoids whose radius varies smoothly with the
direction), packed so that many touch; where two overlap, each voxel goes to the nucleus
it lies deeper in, so touching nuclei share a border as in segmented microscopy.
The image is the masks' intensity (varying per nucleus, brighter rim-free chromatin
texture), blurred like a widefield point spread and with Poisson-like noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError


def make_nuclei(
    shape: Sequence[int] = (128, 128),
    n: int | None = None,
    radius: float = 7.0,
    seed: int = 0,
    noise: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a nuclei image and its instance labels.

    Parameters
    ----------
    shape : sequence of 2 or 3 int
        ``(y, x)`` or ``(z, y, x)``; every side at least 16.
    n : int, optional
        Number of nuclei; default about a third of the area (volume) covered.
    radius : float
        Mean nucleus radius in pixels.
    seed : int
    noise : float
        Noise standard deviation relative to the nuclei's brightness.

    Returns
    -------
    image : numpy.ndarray of float32
        Values about 0 (background) to 1.
    labels : numpy.ndarray of uint16
        0 background, 1 .. n the nuclei (numbered consecutively; nuclei hidden by their
        neighbours are dropped).

    Examples
    --------
    >>> image, labels = make_nuclei((64, 64), seed=1)
    >>> image.shape, labels.dtype.name, int(labels.max()) > 5
    ((64, 64), 'uint16', True)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 16:
        raise InputError(f"shape {shape}: expected 2 or 3 sides of at least 16 pixels")
    if radius < 2:
        raise InputError(f"radius {radius}: expected at least 2 pixels")
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    unit = np.pi * radius**2 if ndim == 2 else 4 / 3 * np.pi * radius**3
    n = int(n if n is not None else max(1, 0.45 * np.prod(shape) / unit))
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    depth = np.full(shape, np.inf, np.float32)  # normalised distance of the deepest nucleus
    labels = np.zeros(shape, np.uint16)
    for i in range(1, n + 1):
        centre = np.array([rng.uniform(radius * 0.5, s - radius * 0.5) for s in shape], np.float32)
        axes = radius * rng.uniform(0.75, 1.3, ndim)
        rotation = np.linalg.qr(rng.normal(size=(ndim, ndim)))[0]
        box = tuple(
            slice(max(0, int(c - 1.6 * axes.max())), min(s, int(c + 1.6 * axes.max()) + 1))
            for c, s in zip(centre, shape)
        )
        offset = grid[(slice(None), *box)] - centre.reshape((ndim,) + (1,) * ndim)
        local = np.tensordot(rotation.T, offset, axes=1) / axes.reshape((ndim,) + (1,) * ndim)
        r = np.sqrt(np.sum(local**2, axis=0)) + 1e-6
        # radius wobble with the direction (star-convex, irregular outline)
        wobble = 1.0
        for _ in range(2):
            direction = rng.normal(size=ndim)
            direction /= np.linalg.norm(direction)
            cos = np.tensordot(direction, local, axes=1) / r
            wobble = wobble + 0.12 * rng.normal() * np.cos(
                rng.integers(2, 5) * np.arccos(np.clip(cos, -1, 1))
            )
        d = r / wobble
        take = (d < 1.0) & (d < depth[box])
        depth[box][take] = d[take]
        labels[box][take] = i
    # renumber consecutively (some nuclei were covered by others)
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(int(labels.max()) + 1, np.uint16)
    lut[present] = np.arange(1, present.size + 1, dtype=np.uint16)
    labels = lut[labels]
    brightness = np.concatenate([[0.0], rng.uniform(0.6, 1.0, present.size)]).astype(np.float32)
    texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.0)
    image = brightness[labels] * (1.0 + 0.6 * texture) * (labels > 0)
    # dimmer borders between touching nuclei, as nuclear envelopes look
    image = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    image += 0.05 + rng.normal(0, noise, shape).astype(np.float32) * np.sqrt(
        np.maximum(image, 0.05)
    )
    return image.astype(np.float32), labels
