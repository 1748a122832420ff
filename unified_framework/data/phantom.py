"""Synthetic micro-CT phantom of a degrading magnesium screw in bone.

The phantom mimics the synchrotron micro-CT volumes SUN was made for (Baltruschat et
al., Sci Rep 11:24237, 2021): a screw of a magnesium alloy along ``z``, partly
corroded, inside a bone with a cortical shell and trabecular structure. It comes with
its ground truth so that segmentation methods can be trained and scored without any
download.

Classes (:data:`CLASS_NAMES`):

0. background: soft tissue, marrow and the air around the sample,
1. bone: trabecular network and cortical shell,
2. residual implant material: the part of the screw that has not degraded,
3. degradation layer: corrosion products around the residual implant.

Geometry, in physical units (``spacing``) and scaled to the field of view, so that the
same seed gives the same anatomy at every size and the phantom stays round for
anisotropic voxels. With ``R`` the half width of the smaller in-plane side:

* screw along ``z`` through the centre of the (y, x) plane: core radius ``0.22 R``,
  a trapezoidal helical thread ``0.07 R`` deep with pitch ``0.32 R``, a conical tip
  ending at 85 % of the ``z`` extent;
* corrosion: the residual implant is the screw minus an erosion depth that varies
  smoothly over the surface (mean about ``0.05 R``) plus deeper pits;
* degradation layer: from the residual surface outwards, ``0.9`` times the local
  erosion depth plus ``0.03 R .. 0.07 R`` (corrosion products swell beyond the
  original surface);
* bone: a cortical shell (outer radius about ``0.85 R``, thickness about ``0.12 R``,
  wobbly), a trabecular network (thin sheets around the zero level set of a band-pass
  random field, about 25 % volume fraction) between implant and cortex, and a
  partial bone contact layer on the degradation layer;
* the sample (bone plus soft tissue) is a cylinder of radius ``0.96 R`` in air.

Grey values are attenuation-like (:data:`GREY_VALUES`, arbitrary units, 1.0 = the
Mg-Gd alloy): air 0.0, soft tissue 0.18, degradation layer 0.50 (+-0.06 texture),
trabecular bone 0.62, cortical bone 0.68, residual implant 1.0. The continuous image is
blurred by a Gaussian (partial volume), then ring artefacts (concentric around the
rotation axis, in every axial (y, x) plane) and signal-dependent Gaussian noise (the
usual Gaussian approximation of Poisson plus read-out noise) are added.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..utils.heap import reuse_freed_memory

CLASS_NAMES = ("background", "bone", "residual implant", "degradation layer")

#: Attenuation-like grey value of each material (arbitrary units, implant alloy = 1).
GREY_VALUES = {
    "air": 0.0,
    "soft tissue": 0.18,
    "degradation layer": 0.50,
    "trabecular bone": 0.62,
    "cortical bone": 0.68,
    "residual implant": 1.0,
}

# Independent random streams, so that e.g. switching noise off keeps the geometry.
_GEOMETRY, _NOISE, _RINGS = range(3)


def make_implant_phantom(
    shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    spacing: Sequence[float] = (5.0, 5.0, 5.0),
    noise: float = 0.04,
    rings: float = 0.03,
    blur: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a micro-CT-like volume of a degrading Mg screw in bone and its labels.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape ``(z, y, x)``; every side at least 8.
    seed : int
        Random seed; the same seed gives the same volume, different seeds different
        anatomy (use them for held-out test volumes).
    spacing : sequence of 3 float
        Voxel size in micrometres ``(z, y, x)``; the anatomy is defined in physical
        units, so anisotropic voxels give a round screw.
    noise : float
        Standard deviation of the noise at the grey value of the implant (0: none).
    rings : float
        Typical amplitude of the ring artefacts (0: none).
    blur : float
        Standard deviation in voxels of the Gaussian partial-volume blur (0: none).

    Returns
    -------
    image : numpy.ndarray of float32
        The grey-value volume, shape ``shape``.
    labels : numpy.ndarray of uint8
        Ground truth with the classes of :data:`CLASS_NAMES`.

    Raises
    ------
    InputError
        If ``shape``, ``spacing`` or a strength is not valid.

    Examples
    --------
    >>> image, labels = make_implant_phantom((32, 48, 48), seed=1)
    >>> image.dtype, labels.dtype, sorted(set(labels.ravel().tolist()))
    (dtype('float32'), dtype('uint8'), [0, 1, 2, 3])
    """
    shape, spacing = _check_arguments(shape, spacing, noise, rings, blur)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    # Some twenty volume-sized temporaries: kept mapped, they are not page-faulted in
    # afresh each time (1.7x faster at 256³ on the development VM).
    with reuse_freed_memory():
        return _image_and_labels(shape, spacing, streams, noise, rings, blur)


def _image_and_labels(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    streams: list[np.random.Generator],
    noise: float,
    rings: float,
    blur: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The work of :func:`make_implant_phantom` on checked arguments."""
    labels, cortex, texture = _anatomy(shape, spacing, streams[_GEOMETRY])

    lut = np.array(
        [
            GREY_VALUES["soft tissue"],
            GREY_VALUES["trabecular bone"],
            GREY_VALUES["residual implant"],
            GREY_VALUES["degradation layer"],
        ],
        dtype=np.float32,
    )
    image = lut[labels]
    image[cortex] = GREY_VALUES["cortical bone"]
    image[labels == 3] += 0.06 * texture[labels == 3]
    image[_outside_sample(shape, spacing)] = GREY_VALUES["air"]
    if blur > 0:
        ndimage.gaussian_filter(image, blur, output=image, mode="nearest")
    if rings > 0:
        image += _ring_pattern(shape, spacing, rings, streams[_RINGS])
    if noise > 0:
        add_noise(image, noise, streams[_NOISE])
    return image, labels


def add_noise(image: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Add the phantom's signal-dependent Gaussian noise to ``image`` in place.

    The standard deviation is ``noise`` at the implant's grey value (1.0) and falls
    with the signal like photon noise, ``noise * sqrt(0.5 + 0.5 * max(image, 0))``.

    Examples
    --------
    >>> image = np.zeros((4, 4), np.float32)
    >>> bool(add_noise(image, 0.1, np.random.default_rng(0)).std() > 0)
    True
    """
    sigma = noise * np.sqrt(0.5 + 0.5 * np.clip(image, 0.0, None))
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return image


def _check_arguments(
    shape, spacing, noise, rings, blur
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    try:
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(
            f"phantom: shape {shape!r} and spacing {spacing!r} must be sequences of numbers"
        ) from None
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(f"phantom: shape {shape} must be 3 sizes (z, y, x) of at least 8")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(
            f"phantom: spacing {spacing} must be 3 positive voxel sizes in micrometres"
        )
    for name, value in (("noise", noise), ("rings", rings), ("blur", blur)):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"phantom: {name}={value!r} must be a finite number >= 0")
    return shape, spacing


def _in_plane(shape, spacing) -> tuple[np.ndarray, np.ndarray, float]:
    """Radius and angle of every (y, x) position about the centre, and the half width R."""
    y = (np.arange(shape[1], dtype=np.float32) - (shape[1] - 1) / 2) * spacing[1]
    x = (np.arange(shape[2], dtype=np.float32) - (shape[2] - 1) / 2) * spacing[2]
    rho = np.hypot(y[:, None], x[None, :])
    theta = np.arctan2(y[:, None], x[None, :])
    half_width = 0.5 * min(shape[1] * spacing[1], shape[2] * spacing[2])
    return rho, theta, half_width


def _outside_sample(shape, spacing) -> np.ndarray:
    rho, _, half_width = _in_plane(shape, spacing)
    return np.broadcast_to(rho > 0.96 * half_width, shape)


def _random_field(
    shape, spacing, length: float, rng: np.random.Generator, band_pass: bool = False
) -> np.ndarray:
    """Smooth Gaussian random field with unit variance and correlation length ``length``.

    Drawn on a coarse grid of cell size ``length / 2`` (physical units) and interpolated
    linearly, which keeps it fast at any size and the same anatomy at every resolution.
    """
    extent = np.asarray(shape) * np.asarray(spacing)
    cell = length / 2
    coarse_shape = tuple(int(n) for n in np.maximum(np.ceil(extent / cell), 2).astype(int) + 4)
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    field = ndimage.gaussian_filter(coarse, 1.0, mode="wrap")
    if band_pass:
        field -= ndimage.gaussian_filter(coarse, 2.5, mode="wrap")
    field /= field.std() + 1e-12
    # Cut the border cells (wrap effects) and stretch the rest over the volume.
    field = field[2:-2, 2:-2, 2:-2]
    # Separable linear interpolation as three small matrix products (much faster than ndimage.zoom).
    for axis in (2, 1, 0):
        weights = _linear_interpolation_matrix(field.shape[axis], shape[axis])
        field = np.moveaxis(np.tensordot(weights, field, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(field, dtype=np.float32)


def _linear_interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix mapping ``n_in`` samples to ``n_out`` by linear interpolation (pixel-edge aligned)."""
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    left = (
        np.minimum(np.floor(position).astype(int), n_in - 2) if n_in > 1 else np.zeros(n_out, int)
    )
    frac = (position - left).astype(np.float32)
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    weights[np.arange(n_out), left] = 1 - frac
    if n_in > 1:
        weights[np.arange(n_out), left + 1] += frac
    return weights


def _anatomy(shape, spacing, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, the cortical-bone mask and the degradation-layer texture."""
    rho, theta, half_width = _in_plane(shape, spacing)
    r_unit = half_width
    z = np.arange(shape[0], dtype=np.float32) * spacing[0]
    z_extent = shape[0] * spacing[0]
    phase0, wobble_phase = rng.uniform(0, 2 * np.pi, size=2)

    # Screw surface: core plus trapezoidal helical thread, conical tip.
    pitch = 0.32 * r_unit
    turn = (
        theta[None] / np.float32(2 * np.pi)
        - (z / pitch)[:, None, None]
        + np.float32(phase0 / (2 * np.pi))
    )
    turn -= np.floor(turn)
    thread = np.clip(1.6 * (1 - np.abs(2 * turn - 1)) - 0.3, 0, 1)
    del turn
    surface = np.float32(0.22 * r_unit) + np.float32(0.07 * r_unit) * thread
    del thread
    tip_end, tip_start = 0.85 * z_extent, 0.70 * z_extent
    taper = np.clip((tip_end - z) / (tip_end - tip_start), 0, 1).astype(np.float32)
    surface *= taper[:, None, None]

    # Corrosion: smoothly varying erosion plus pits.
    erosion = np.float32(0.05 * r_unit) * np.clip(
        1 + 0.6 * _random_field(shape, spacing, 0.25 * r_unit, rng), 0, None
    )
    pits = _random_field(shape, spacing, 0.08 * r_unit, rng)
    erosion += np.float32(0.06 * r_unit) * (pits > 1.3)
    del pits
    residual_radius = surface - erosion
    layer = np.float32(0.05 * r_unit) * (
        1 + 0.4 * np.clip(_random_field(shape, spacing, 0.2 * r_unit, rng), -1, 1)
    )
    layer += np.float32(0.9) * erosion
    layer_radius = residual_radius + layer
    del erosion, layer
    has_screw = surface > 0
    residual = (rho[None] < residual_radius) & has_screw
    degradation = (rho[None] < layer_radius) & has_screw & ~residual
    del residual_radius

    # Cortical shell with a wobbly outline.
    wobble = (
        1
        + 0.03 * np.sin(3 * theta + wobble_phase)[None]
        + 0.02 * np.sin(2 * np.pi * z / z_extent)[:, None, None]
    )
    outer = np.float32(0.85 * r_unit) * wobble
    inner = outer - np.float32(0.12 * r_unit)
    cortex = (rho[None] < outer) & (rho[None] > inner)
    del wobble, outer

    # Trabecular network: thin sheets around the zero level set of a band-pass field.
    # Trabeculae are kept at least about two voxels thick so small phantoms stay resolvable.
    length = max(0.12 * r_unit, 4 * min(spacing))
    trabecular = np.abs(_random_field(shape, spacing, length, rng, band_pass=True)) < 0.33
    trabecular &= rho[None] < inner
    del inner
    contact = (_random_field(shape, spacing, 0.15 * r_unit, rng) > 0) & (
        rho[None] < layer_radius + np.float32(0.05 * r_unit)
    )
    bone = cortex | trabecular | contact
    del trabecular, contact, layer_radius

    texture = _random_field(shape, spacing, 0.1 * r_unit, rng)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[bone] = 1
    labels[degradation] = 3
    labels[residual] = 2
    labels[_outside_sample(shape, spacing)] = 0
    return labels, cortex & (labels == 1), texture


def _ring_pattern(shape, spacing, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Concentric rings about the rotation axis (the centre of every (y, x) plane).

    Each detector column gives one ring radius with its own gain error: a weak random
    offset at every radius plus a few strong rings, slowly modulated along ``z``.
    """
    rho, _, _ = _in_plane(shape, spacing)
    radius = np.rint(rho / min(spacing[1], spacing[2])).astype(np.intp)
    n_radii = int(radius.max()) + 1
    profile = 0.3 * rng.standard_normal(n_radii)
    strong = rng.random(n_radii) < 0.06
    profile[strong] += rng.choice([-1.0, 1.0], strong.sum()) * rng.uniform(1.5, 3.0, strong.sum())
    profile[0] = 0.0
    modulation = 1 + 0.25 * np.sin(
        2 * np.pi * np.arange(shape[0]) / max(shape[0], 16) + rng.uniform(0, 2 * np.pi)
    )
    return (amplitude * modulation[:, None, None] * profile[radius][None]).astype(np.float32)
