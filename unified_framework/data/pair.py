"""Registration test pairs from the implant phantom with a known deformation.

:func:`make_registration_pair` draws one phantom (the *moving* scan), a smooth random
displacement field ``u`` and makes the *fixed* scan as ``fixed(p) = moving(p + u(p))``,
so ``u`` is exactly the field a registration should recover, in the convention of
:mod:`unified_framework.registration.fields` (micrometres, ``(3, z, y, x)``). Noise and
ring artefacts are added to each scan separately after warping, like two acquisitions.
With ``multimodal=True`` the moving scan gets a non-monotonic grey-value remapping and
stronger plain Gaussian noise (like a neutron scan of an x-ray-scanned sample), so
intensity-based similarity fails and MIND/mutual information are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .phantom import _outside_sample, _random_field, _ring_pattern, add_noise, make_implant_phantom


@dataclass
class RegistrationPair:
    """A fixed/moving pair with ground truth (see :func:`make_registration_pair`).

    Attributes
    ----------
    fixed, moving : numpy.ndarray of float32 ``(z, y, x)``
    fixed_labels, moving_labels : numpy.ndarray of uint8
        Phantom classes (``CLASS_NAMES``) of each scan.
    field : numpy.ndarray of float32 ``(3, z, y, x)``
        The true displacement in micrometres: ``fixed(p) = moving(p + field(p))``.
    fixed_points, moving_points : numpy.ndarray ``(n, 3)``
        Corresponding landmarks in micrometres ``(z, y, x)``.
    spacing : tuple of 3 float
        Voxel size in micrometres.
    """

    fixed: np.ndarray
    moving: np.ndarray
    fixed_labels: np.ndarray
    moving_labels: np.ndarray
    field: np.ndarray
    fixed_points: np.ndarray
    moving_points: np.ndarray
    spacing: tuple[float, float, float]


def remap_modality(image: np.ndarray) -> np.ndarray:
    """Non-monotonic grey-value map standing in for a second modality.

    ``0.5 - 0.5 cos(2.6 pi v)``: air stays dark, soft tissue 0.45, degradation layer
    0.79, trabecular bone 0.33, cortical bone 0.13, implant 0.65 -- every class keeps
    its own grey value but their order changes.

    Examples
    --------
    >>> [round(float(v), 2) for v in remap_modality(np.array([0.0, 0.18, 1.0]))]
    [0.0, 0.45, 0.65]
    """
    return (0.5 - 0.5 * np.cos(2.6 * np.pi * np.asarray(image, dtype=np.float32))).astype(
        np.float32
    )


def make_registration_pair(
    shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    spacing: Sequence[float] = (5.0, 5.0, 5.0),
    displacement: float = 3.0,
    smoothness: float = 0.4,
    multimodal: bool = False,
    landmarks: int = 20,
    noise: float = 0.03,
    rings: float = 0.02,
) -> RegistrationPair:
    """Make a phantom pair related by a known smooth random deformation.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape ``(z, y, x)``, every side at least 16.
    seed : int
        Seed of anatomy, deformation, noise and landmarks.
    spacing : sequence of 3 float
        Voxel size in micrometres.
    displacement : float
        Largest displacement, in voxels (of the smallest voxel side).
    smoothness : float
        Correlation length of the deformation as a share of the smallest extent
        (larger: smoother); with the default ``displacement`` there is no folding.
    multimodal : bool
        Remap the moving scan's grey values (:func:`remap_modality`) and give it
        stronger, signal-independent noise.
    landmarks : int
        Number of landmark pairs (fixed voxel centres inside the sample).
    noise, rings : float
        Noise and ring-artefact strengths of the fixed scan (see
        :func:`~unified_framework.data.make_implant_phantom`).

    Returns
    -------
    RegistrationPair

    Examples
    --------
    >>> pair = make_registration_pair((32, 32, 32), seed=1)
    >>> pair.field.shape, pair.fixed_points.shape
    ((3, 32, 32, 32), (20, 3))
    """
    from ..registration.fields import warp

    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise InputError(f"pair: shape {shape} must be 3 sizes (z, y, x) of at least 16")
    if not (np.isfinite(displacement) and displacement >= 0) or not (
        np.isfinite(smoothness) and smoothness > 0
    ):
        raise InputError(
            f"pair: displacement={displacement!r} must be >= 0 and smoothness={smoothness!r} > 0"
        )
    if landmarks < 0:
        raise InputError(f"pair: landmarks={landmarks!r}; expected a count >= 0")
    clean, labels = make_implant_phantom(shape, seed=seed, spacing=spacing, noise=0.0, rings=0.0)
    spacing = tuple(float(s) for s in spacing)
    rng = np.random.default_rng([seed, 7])
    extent = min(n * s for n, s in zip(shape, spacing))
    components = np.stack(
        [_random_field(shape, spacing, smoothness * extent, rng) for _ in range(3)]
    )
    scale = displacement * min(spacing) / max(float(np.sqrt((components**2).sum(0)).max()), 1e-12)
    field = (components * np.float32(scale)).astype(np.float32)

    fixed = warp(clean, field, spacing)
    fixed_labels = warp(labels, field, spacing, interpolation="nearest")
    moving = clean.copy()
    if rings > 0:
        fixed += _ring_pattern(shape, spacing, rings, np.random.default_rng([seed, 8]))
        moving += _ring_pattern(shape, spacing, rings, np.random.default_rng([seed, 9]))
    if noise > 0:
        add_noise(fixed, noise, np.random.default_rng([seed, 10]))
    if multimodal:
        moving = remap_modality(moving)
        if noise > 0:
            moving += np.float32(1.5 * noise) * np.random.default_rng([seed, 11]).standard_normal(
                shape, dtype=np.float32
            )
    elif noise > 0:
        add_noise(moving, noise, np.random.default_rng([seed, 11]))

    inside = np.argwhere(~_outside_sample(shape, spacing) & (fixed_labels > 0))
    if landmarks and len(inside) < landmarks:
        raise InputError(f"pair: shape {shape} leaves too few voxels for {landmarks} landmarks")
    picked = (
        inside[rng.choice(len(inside), size=landmarks, replace=False)]
        if landmarks
        else np.zeros((0, 3), int)
    )
    fixed_points = picked * np.asarray(spacing)
    moving_points = fixed_points + field[:, picked[:, 0], picked[:, 1], picked[:, 2]].T
    dz, dy, dx = (float(s) for s in spacing)
    return RegistrationPair(
        fixed, moving, fixed_labels, labels, field, fixed_points, moving_points, (dz, dy, dx)
    )
