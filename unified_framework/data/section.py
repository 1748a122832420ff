"""A synthetic "histology" section cut from the implant phantom at a known plane.

Real sections differ from the plane of the volume they show: the stain maps tissue
classes to colours unrelated to X-ray attenuation, the section is a slab several µm
thick, it shrinks and stretches when it is cut and mounted, it tears, and the slide
scan is noisy. :func:`make_section_sample` imitates each of these on the implant
phantom (:mod:`unified_framework.data.phantom`) and returns the ground truth, so that
locating a section (:func:`unified_framework.histology.locate_section`) can be tested
and benchmarked.

Ground-truth convention (also :mod:`unified_framework.histology.match`): with ``p``
the position of a section pixel in µm relative to the image centre, listed
``(row, column)``, the point of the plane it shows is
``q = scale * R(rotation) p + translation`` in plane coordinates ``(along v, along u)``
relative to ``plane.point`` (before the elastic deformation, which is not part of the
similarity transform); ``R(a) = [[cos a, -sin a], [sin a, cos a]]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io import Volume
from .phantom import _outside_sample, make_implant_phantom

#: Stain colour (RGB, 0..255) per class: background (soft tissue), bone, residual
#: implant, degradation layer, and glass (outside the sample). A Goldner/H&E-like look:
#: bone deep pink, corrosion layer purple, metal dark grey, soft tissue pale.
STAIN_COLOURS = np.array(
    [[236, 196, 208], [196, 58, 118], [62, 62, 72], [112, 72, 162], [250, 250, 248]],
    dtype=np.float32,
)
_GLASS = 4


def similarity_matrix(
    rotation_deg: float, scale: float, translation: Sequence[float]
) -> np.ndarray:
    """3x3 homogeneous matrix of ``q = scale * R(rotation) p + translation`` on ``(row, column)`` µm.

    Examples
    --------
    >>> np.round(similarity_matrix(90, 2.0, (1, 0)) @ [1, 0, 1], 6).tolist()
    [1.0, 2.0, 1.0]
    """
    a = math.radians(rotation_deg)
    m = np.eye(3)
    m[:2, :2] = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m[:2, 2] = translation
    return m


def make_section_sample(
    shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    spacing: float = 5.0,
    pixel_size: float | None = None,
    thickness: float = 10.0,
    max_tilt: float = 25.0,
    shrink: tuple[float, float] = (0.85, 1.0),
    elastic: float = 1.5,
    noise: float = 6.0,
    torn: bool = True,
    maps: bool = False,
) -> tuple[Volume, Volume, dict[str, Any]]:
    """Make the implant phantom and a stained, deformed, torn section of it at a random plane.

    Parameters
    ----------
    shape : sequence of 3 int
        Phantom shape ``(z, y, x)``.
    seed : int
        Seeds both the phantom and the section (plane, deformation, tear, noise).
    spacing : float
        Isotropic voxel size of the phantom in µm.
    pixel_size : float, optional
        Pixel size of the section image in µm (default: the voxel size).
    thickness : float
        Section thickness in µm (the colours are averaged over the slab).
    max_tilt : float
        Largest angle (degrees) between the plane normal and the z axis (the screw).
    shrink : (float, float)
        Range of the tissue's linear shrinkage factor (section size / plane size).
    elastic : float
        Largest elastic displacement, in section pixels (smooth random field).
    noise : float
        Standard deviation of the colour noise (0..255 scale).
    torn : bool
        Tear a strip and remove a piece of tissue (white glass shows through).
    maps : bool
        Also return per-pixel ground truth (numpy arrays, not JSON; for tests and
        benchmarks of registration and label transfer): ``truth["classes"]`` the class
        of each section pixel at the slab's centre (``uint8``: the phantom's labels,
        4 = glass, torn or outside the sample), ``truth["world_um"]`` the world
        position ``(h, w, 3)`` each pixel shows (elastic deformation included) and
        ``truth["volume_labels"]`` the phantom's label volume.

    Returns
    -------
    volume : Volume
        The grey phantom (float32, spacing ``spacing``).
    section : Volume
        RGB uint8 image ``(y, x, 3)``, ``axes="yxc"``, spacing ``pixel_size``.
    truth : dict
        JSON-ready ground truth: ``plane`` (:meth:`Plane.to_dict`), ``tilt_deg``,
        ``azimuth_deg``, ``offset_um`` (from the volume centre along the normal),
        ``section_to_plane`` (``rotation_deg``, ``scale``, ``translation_um``; see the
        module docstring), ``pixel_size_um``, ``thickness_um``, ``seed``.

    Examples
    --------
    >>> vol, section, truth = make_section_sample((32, 48, 48), seed=1)
    >>> section.axes, section.dtype.name, truth["tilt_deg"] <= 25
    ('yxc', 'uint8', True)
    """
    from ..histology.plane import Plane, volume_centre
    from ..histology.sampling import sample_points, slab_depths

    pixel_size = float(spacing if pixel_size is None else pixel_size)
    if not (0 <= max_tilt <= 90):
        raise InputError(f"max tilt: {max_tilt}; expected 0..90 degrees")
    image, labels = make_implant_phantom(shape, seed=seed, spacing=(spacing,) * 3)
    volume = Volume(image, (spacing,) * 3)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    # Uniform over the spherical cap of half-angle max_tilt.
    cos_t = 1 - rng.random() * (1 - math.cos(math.radians(max_tilt)))
    tilt = math.degrees(math.acos(cos_t))
    azimuth = float(rng.uniform(0, 360))
    z_extent = shape[0] * spacing
    offset = float(rng.uniform(-0.2, 0.2) * z_extent)
    centre = volume_centre(volume)
    plane = Plane.from_angles(tilt, azimuth, offset, centre)
    factor = float(rng.uniform(*shrink))
    rotation = float(rng.uniform(-180, 180))
    radius = 0.5 * min(shape[1], shape[2]) * spacing
    translation = rng.uniform(-0.08, 0.08, 2) * radius
    scale = 1.0 / factor

    side = int(2 * math.ceil(radius * factor / pixel_size))
    rows = (np.arange(side) - (side - 1) / 2) * pixel_size
    p = np.stack(np.meshgrid(rows, rows, indexing="ij"), axis=-1)
    q = p @ similarity_matrix(rotation, scale, (0, 0))[:2, :2].T + translation
    q += _elastic_field((side, side), elastic * pixel_size * scale, rng)
    depths = slab_depths(thickness, volume.spacing)
    world = np.stack([plane.world(q) + d * plane.normal for d in depths])

    classes = labels.copy()
    classes[_outside_sample(labels.shape, volume.spacing)] = _GLASS
    cls, inside = sample_points(volume.with_data(classes), world, order=0)
    cls = np.where(inside, cls, _GLASS).astype(np.intp)
    texture = 1 + 0.06 * _smooth_noise((side, side), 2.0, rng)
    rgb = (STAIN_COLOURS[cls] * np.where(cls == _GLASS, 1.0, texture)[..., None]).mean(axis=0)
    tear = _tear_mask((side, side), rng) if torn else np.zeros((side, side), bool)
    rgb[tear] = STAIN_COLOURS[_GLASS]
    rgb += noise * rng.standard_normal(rgb.shape)
    section = Volume(
        np.clip(np.rint(rgb), 0, 255).astype(np.uint8),
        (pixel_size, pixel_size),
        {"sample": "implant section"},
        axes="yxc",
    )
    truth = {
        "plane": plane.to_dict(),
        "tilt_deg": tilt,
        "azimuth_deg": azimuth,
        "offset_um": offset,
        "axis": [1.0, 0.0, 0.0],
        "section_to_plane": {
            "rotation_deg": rotation,
            "scale": scale,
            "translation_um": [float(t) for t in translation],
        },
        "pixel_size_um": pixel_size,
        "thickness_um": float(thickness),
        "volume": {
            "shape": [int(s) for s in shape],
            "spacing_um": [float(spacing)] * 3,
            "seed": int(seed),
        },
        "seed": int(seed),
    }
    if maps:
        centre = plane.world(q)
        centre_cls, centre_inside = sample_points(volume.with_data(classes), centre[None], order=0)
        centre_classes = np.where(centre_inside[0], centre_cls[0], _GLASS).astype(np.uint8)
        centre_classes[tear] = _GLASS
        truth["classes"] = centre_classes
        truth["world_um"] = centre
        truth["volume_labels"] = labels
    return volume, section, truth


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-12)


def _elastic_field(
    shape: tuple[int, int], amplitude: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth 2D displacement (µm) whose largest magnitude is ``amplitude``."""
    field = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(shape), max(shape) / 6) for _ in range(2)],
        axis=-1,
    )
    peak = np.abs(field).max()
    return field * (amplitude / peak) if peak > 0 else field


def _tear_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A missing piece (an ellipse near the edge) and a thin torn strip across part of the section."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    angle = rng.uniform(0, 2 * math.pi)
    cy, cx = (h - 1) / 2 + 0.3 * h * math.sin(angle), (w - 1) / 2 + 0.3 * w * math.cos(angle)
    ry, rx = rng.uniform(0.08, 0.14) * h, rng.uniform(0.08, 0.14) * w
    missing = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    direction = rng.uniform(0, math.pi)
    distance = np.abs(
        (yy - (h - 1) / 2) * math.cos(direction)
        - (xx - (w - 1) / 2) * math.sin(direction)
        - rng.uniform(-0.2, 0.2) * h
    )
    along = (yy - (h - 1) / 2) * math.sin(direction) + (xx - (w - 1) / 2) * math.cos(direction)
    strip = (distance < 1.0 + 0.01 * h) & (along > -0.1 * w) & (along < 0.35 * w)
    return missing | strip
