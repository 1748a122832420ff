"""Deformable registration with convexAdam (Siebert, Hansen & Heinrich, 2021/2024).

convexAdam compares MIND-SSC self-similarity features (which do not depend on the grey
values themselves, so x-ray vs neutron or CT vs MRI works too), finds a smooth
displacement by a coupled convex optimisation over a discrete search window, makes it
inverse-consistent and refines it with Adam under a diffusion regulariser. This module
wraps the package's ``convex_adam_pt`` and returns the field in the framework's
convention (:mod:`.fields`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class ConvexAdamParams:
    """Parameters of ``convexAdam.convex_adam_MIND.convex_adam_pt``, with the package's defaults.

    Attributes
    ----------
    mind_r : int
        Radius of the MIND-SSC patch (voxels).
    mind_d : int
        Dilation of the MIND-SSC self-similarity pattern (voxels).
    lambda_weight : float
        Weight of the diffusion regulariser of the Adam refinement (0: no refinement).
    grid_sp : int
        Control-point spacing (voxels) of the convex step.
    disp_hw : int
        Half width of the discrete search window, in control-point steps: the largest
        displacement found is about ``disp_hw * grid_sp`` voxels.
    selected_niter : int
        Adam iterations.
    selected_smooth : int
        Odd box size of a final smoothing of the field (0: none).
    grid_sp_adam : int
        Grid spacing (voxels) of the Adam refinement.
    ic : bool
        Make the convex result inverse-consistent.
    downsample : int or None
        Not a package parameter: compute the MIND-SSC features and the convex step on a
        copy binned by this factor (None: 2 for volumes of at least
        :data:`HALF_RESOLUTION_FROM` voxels a side, else 1). ``grid_sp`` and
        ``disp_hw`` then count binned voxels (the search reaches ``downsample`` times
        further), while ``grid_sp_adam`` keeps counting full-resolution voxels: the
        Adam grid stays as fine as the package's (``grid_sp_adam / downsample`` binned
        voxels, at least 1). The field is upsampled to the full grid. Features and
        Adam then cost about an eighth (see ``docs/registration.md``).
    """

    mind_r: int = 1
    mind_d: int = 2
    lambda_weight: float = 1.25
    grid_sp: int = 6
    disp_hw: int = 4
    selected_niter: int = 80
    selected_smooth: int = 0
    grid_sp_adam: int = 2
    ic: bool = True
    downsample: int | None = None

    def __post_init__(self) -> None:
        for name in ("mind_r", "mind_d", "grid_sp", "disp_hw", "grid_sp_adam"):
            if int(getattr(self, name)) < 1:
                raise InputError(
                    f"convexadam: {name}={getattr(self, name)!r}; expected a positive integer"
                )
        if self.downsample is not None and int(self.downsample) < 1:
            raise InputError(
                f"convexadam: downsample={self.downsample!r}; expected a positive integer or None"
            )
        if self.lambda_weight == 0 and not self.ic:
            raise InputError(
                "convexadam: lambda_weight=0 with ic off returns only the coarse control grid in convexAdam 0.2; "
                "expected lambda_weight > 0 or ic on"
            )
        if self.selected_niter < 0 or self.lambda_weight < 0:
            raise InputError("convexadam: selected_niter and lambda_weight must be >= 0")
        if self.selected_smooth and self.selected_smooth % 2 == 0:
            raise InputError(
                f"convexadam: selected_smooth={self.selected_smooth}; expected 0 or an odd number"
            )


#: Parameters of :class:`ConvexAdamParams` that are the framework's, not ``convex_adam_pt``'s.
FRAMEWORK_PARAMS = ("downsample",)

#: With ``downsample=None``, volumes whose smallest side has at least this many voxels
#: are registered at half resolution.
HALF_RESOLUTION_FROM = 96


def resolved_downsample(params: ConvexAdamParams, shape: Sequence[int]) -> int:
    """The binning factor ``params.downsample`` means for a volume of ``shape``.

    Examples
    --------
    >>> resolved_downsample(ConvexAdamParams(), (128, 128, 128)), resolved_downsample(ConvexAdamParams(), (40, 40, 40))
    (2, 1)
    """
    if params.downsample is not None:
        return int(params.downsample)
    return 2 if min(shape) >= HALF_RESOLUTION_FROM else 1


def _convex_adam_pt() -> Any:
    # convexAdam calls warnings.filterwarnings("ignore") when imported, which would
    # silence every warning of the whole process; keep its filters to itself.
    with warnings.catch_warnings():
        from convexAdam.convex_adam_MIND import convex_adam_pt
    return convex_adam_pt


def normalise(image: np.ndarray) -> np.ndarray:
    """Grey values scaled to ``[0, 1]`` between the 0.5 and 99.5 percentiles (float32).

    Examples
    --------
    >>> normalise(np.array([0.0, 5.0, 10.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, (0.5, 99.5))
    if hi <= lo:
        return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), 0, 1).astype(np.float32)


def register_convexadam(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float],
    params: ConvexAdamParams | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Deformable registration of ``moving`` to ``fixed`` with convexAdam (MIND-SSC).

    Parameters
    ----------
    fixed, moving : numpy.ndarray ``(z, y, x)``
        On the same grid (pre-align with :func:`~.affine.register_affine` if they are
        not roughly aligned: the search window is about ``disp_hw * grid_sp`` voxels).
    spacing : sequence of 3 float
        Voxel size in micrometres (the field is returned in micrometres).
    params : ConvexAdamParams, optional
        Default: the package's defaults.
    device : str, optional
        ``cpu``, ``cuda``; default a GPU if torch sees one. On CPU the features are
        float32 (the package's float16 needs a GPU).

    Returns
    -------
    numpy.ndarray ``(3, z, y, x)`` float32
        The displacement field (:mod:`.fields` convention).

    Examples
    --------
    >>> from unified_framework.data import make_implant_phantom
    >>> image, _ = make_implant_phantom((24, 24, 24))
    >>> field = register_convexadam(image, image, (5, 5, 5), ConvexAdamParams(selected_niter=5), device="cpu")
    >>> field.shape
    (3, 24, 24, 24)
    """
    import torch

    from ..sun.inference.predictor import resolve_device

    params = params or ConvexAdamParams()
    fixed, moving = np.asarray(fixed), np.asarray(moving)
    if fixed.shape != moving.shape or fixed.ndim != 3:
        raise InputError(
            f"convexadam: fixed {fixed.shape} and moving {moving.shape}; expected two 3D volumes on one grid"
        )
    factor = resolved_downsample(params, fixed.shape)
    smallest = 2 * params.grid_sp
    if min(fixed.shape) < smallest * factor:
        raise InputError(
            f"convexadam: volume {fixed.shape} is too small for grid_sp={params.grid_sp} at downsample {factor}; "
            f"expected every side >= {smallest * factor}"
        )
    full_shape = fixed.shape
    if factor > 1:
        from .run import bin_volume

        fixed, moving = bin_volume(fixed, factor), bin_volume(moving, factor)
    torch_device = resolve_device(device)
    dtype = torch.float16 if torch_device.type == "cuda" else torch.float32
    convex_adam_pt = _convex_adam_pt()
    # The Adam refinement needs gradients even when called under no_grad; the package's
    # implicit align_corners in grid_sample warns on every call (its results assume it).
    package_params = {k: v for k, v in asdict(params).items() if k not in FRAMEWORK_PARAMS}
    package_params["grid_sp_adam"] = max(1, round(params.grid_sp_adam / factor))
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Default grid_sample and affine_grid behavior", category=UserWarning
        )
        displacement = convex_adam_pt(
            img_fixed=torch.from_numpy(normalise(fixed)),
            img_moving=torch.from_numpy(normalise(moving)),
            **package_params,
            dtype=dtype,
            verbose=False,
            device=torch_device,
        )
    # convexAdam returns (z, y, x, 3) in voxels of the array axes, moving(p + d(p)).
    field = np.moveaxis(np.asarray(displacement, dtype=np.float32), -1, 0)
    coarse = tuple(float(s) * factor for s in spacing)
    field *= np.asarray(coarse, dtype=np.float32).reshape(3, 1, 1, 1)
    if factor > 1:
        from .fields import resample_field

        # The binned copy's voxel i sits at voxel i * factor: upsample by position.
        field = resample_field(field, full_shape, spacing, coarse)
    return np.ascontiguousarray(field)
