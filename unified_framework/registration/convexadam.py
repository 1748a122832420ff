"""Deformable registration with convexAdam (Siebert, Hansen & Heinrich, 2021/2024).

convexAdam compares MIND-SSC self-similarity features (which do not depend on the grey
values themselves, so x-ray vs neutron or CT vs MRI works too), finds a smooth
displacement by a coupled convex optimisation over a discrete search window, makes it
inverse-consistent and refines it with Adam under a diffusion regulariser. This module
wraps the package's ``convex_adam_pt`` and returns the field in the framework's
convention (:mod:`.fields`).

With the package's parameters (the default) the package's own ``convex_adam_pt`` runs.
The ``fast`` preset (:data:`PRESETS`) needs two things that function cannot do, a
coarse-to-fine Adam schedule and another learning rate, so there the same steps are
composed here from the package's functions (``extract_features`` for MIND-SSC,
``correlate``, ``coupled_convex``, ``inverse_consistency``); only the Adam loop is our
own, a line-by-line copy of the package's with two changes: its three
``avg_pool3d(3, stride=1, padding=1)`` smoothings of the grid are computed as
separable shifted sums (the same numbers, three times faster on a CPU) and it runs on
a grid twice as coarse first (``coarse_niter``) and then on the package's grid with
``lr``. See ``docs/registration.md`` for the measured trade-off.
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
    coarse_niter : int
        Not a package parameter: Adam iterations on a grid twice as coarse as the Adam
        grid (features pooled twice as far, the package's learning rate 1) before the
        ``selected_niter`` ones on the Adam grid (0: none, as in the package).
    lr : float
        Not a package parameter: learning rate of the ``selected_niter`` Adam
        iterations on the Adam grid (the package's is 1, hard-coded). Adam moves every
        control point by about ``lr`` grid steps per iteration at first, so after a
        coarse start a few iterations with a small rate refine it without first
        disturbing it.
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
    coarse_niter: int = 0
    lr: float = 1.0

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
        if self.selected_niter < 0 or self.lambda_weight < 0 or self.coarse_niter < 0:
            raise InputError(
                "convexadam: selected_niter, coarse_niter and lambda_weight must be >= 0"
            )
        if not self.lr > 0:
            raise InputError(f"convexadam: lr={self.lr!r}; expected a positive number")
        if self.selected_smooth and self.selected_smooth % 2 == 0:
            raise InputError(
                f"convexadam: selected_smooth={self.selected_smooth}; expected 0 or an odd number"
            )

    @property
    def package_only(self) -> bool:
        """True when ``convex_adam_pt`` itself can run these parameters (no coarse start, lr 1).

        Examples
        --------
        >>> ConvexAdamParams().package_only, preset("fast").package_only
        (True, False)
        """
        return self.coarse_niter == 0 and self.lr == 1.0


#: Parameters of :class:`ConvexAdamParams` that are the framework's, not ``convex_adam_pt``'s.
FRAMEWORK_PARAMS = ("downsample", "coarse_niter", "lr")

#: Named parameter sets. ``package``: the package's defaults. ``fast``: 30 Adam
#: iterations on a grid of 4 voxels then 8 on the package's grid of 2 at learning rate
#: 0.2, regulariser 2.5 (the package's 1.25 lets the few iterations fold less smoothly);
#: at 128³ on one CPU thread about 2 s instead of 10 for the package's defaults, mean
#: warped-label Dice 0.001-0.003 lower on the benchmark pairs (docs/registration.md).
PRESETS: dict[str, dict[str, Any]] = {
    "package": {},
    "fast": {"lambda_weight": 2.5, "coarse_niter": 30, "selected_niter": 8, "lr": 0.2},
}


def preset(name: str, **overrides: Any) -> ConvexAdamParams:
    """The parameters of a named preset (:data:`PRESETS`), with some overridden.

    Examples
    --------
    >>> preset("fast").selected_niter, preset("fast", selected_niter=4).selected_niter
    (8, 4)
    """
    if name not in PRESETS:
        raise InputError(
            f"convexadam: preset {name!r}; expected one of {', '.join(PRESETS)}", field="preset"
        )
    return ConvexAdamParams(**{**PRESETS[name], **overrides})


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
        warnings.filterwarnings("ignore", message=".*align_corners", category=UserWarning)
        images = torch.from_numpy(normalise(fixed)), torch.from_numpy(normalise(moving))
        if params.package_only:
            displacement = convex_adam_pt(
                img_fixed=images[0],
                img_moving=images[1],
                **package_params,
                dtype=dtype,
                verbose=False,
                device=torch_device,
            )
        else:
            displacement = _convex_adam_composed(
                *images,
                package_params,
                coarse_niter=params.coarse_niter,
                lr=params.lr,
                dtype=dtype,
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


def _box3(x: Any) -> Any:
    """``F.avg_pool3d(x, 3, stride=1, padding=1)`` (zeros outside, divisor 27) as separable shifted sums.

    The same numbers as the package's pooling, about three times faster on a CPU, with
    gradients (the Adam loop smooths its grid with it three times per iteration).
    """
    import torch.nn.functional as F

    for dim in (2, 3, 4):
        n = x.shape[dim]
        pad = [0] * 6
        pad[2 * (4 - dim)] = pad[2 * (4 - dim) + 1] = 1
        padded = F.pad(x, pad)
        x = (padded.narrow(dim, 0, n) + padded.narrow(dim, 1, n) + padded.narrow(dim, 2, n)) / 3
    return x


def _adam_refine(
    features_fix: Any,
    features_mov: Any,
    disp_hr: Any,
    grid_sp_adam: int,
    lambda_weight: float,
    niter: int,
    lr: float,
) -> Any:
    """The package's Adam instance optimisation (``convex_adam_pt``'s loop) from ``disp_hr``.

    Identical to the package's loop but for the learning rate and the grid smoothing
    computed by :func:`_box3`; returns the smoothed field upsampled to ``disp_hr``'s grid.
    """
    import torch
    import torch.nn.functional as F

    shape = features_fix.shape[-3:]
    size = tuple(n // grid_sp_adam for n in shape)
    device = features_fix.device
    with torch.no_grad():
        patch_fix = F.avg_pool3d(features_fix, grid_sp_adam, stride=grid_sp_adam).float()
        patch_mov = F.avg_pool3d(features_mov, grid_sp_adam, stride=grid_sp_adam).float()
        start = F.interpolate(disp_hr.float(), size=size, mode="trilinear", align_corners=False)
    weight = (start / grid_sp_adam).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=lr)
    grid0 = F.affine_grid(
        torch.eye(3, 4, device=device).unsqueeze(0), [1, 1, *size], align_corners=False
    )
    scale = torch.tensor([(n - 1) / 2 for n in size], device=device).unsqueeze(0)

    # Like the package, the result is the smoothed grid of the last iteration, before
    # its Adam step (the grid as it was when the loss was last evaluated).
    with torch.no_grad():
        disp_sample = _box3(_box3(_box3(weight))).permute(0, 2, 3, 4, 1)
    for _ in range(niter):
        optimizer.zero_grad()
        disp_sample = _box3(_box3(_box3(weight))).permute(0, 2, 3, 4, 1)
        reg_loss = lambda_weight * (
            ((disp_sample[0, :, 1:, :] - disp_sample[0, :, :-1, :]) ** 2).mean()
            + ((disp_sample[0, 1:, :, :] - disp_sample[0, :-1, :, :]) ** 2).mean()
            + ((disp_sample[0, :, :, 1:] - disp_sample[0, :, :, :-1]) ** 2).mean()
        )
        grid_disp = grid0.view(-1, 3) + (disp_sample.reshape(-1, 3) / scale).flip(1)
        sampled = F.grid_sample(
            patch_mov, grid_disp.view(1, *size, 3), align_corners=False, mode="bilinear"
        )
        loss = (sampled - patch_fix).pow(2).mean(1).mean() * 12
        (loss + reg_loss).backward()
        optimizer.step()
    fitted_grid = disp_sample.detach().permute(0, 4, 1, 2, 3)
    return F.interpolate(
        fitted_grid * grid_sp_adam, size=tuple(shape), mode="trilinear", align_corners=False
    )


def _convex_adam_composed(
    img_fixed: Any,
    img_moving: Any,
    package_params: dict[str, Any],
    coarse_niter: int,
    lr: float,
    dtype: Any,
    device: Any,
) -> np.ndarray:
    """``convex_adam_pt`` composed from the package's functions, with a coarse-to-fine Adam.

    The feature and convex steps are the package's own calls in the package's order;
    the Adam refinement runs ``coarse_niter`` iterations on a grid of
    ``2 * grid_sp_adam`` (learning rate 1, as the package) and then ``selected_niter``
    on ``grid_sp_adam`` with learning rate ``lr``. Returns ``(z, y, x, 3)`` like the
    package.
    """
    import torch
    import torch.nn.functional as F
    from convexAdam.convex_adam_MIND import extract_features
    from convexAdam.convex_adam_utils import correlate, coupled_convex, inverse_consistency

    p = package_params
    grid_sp, disp_hw = p["grid_sp"], p["disp_hw"]
    shape = tuple(img_fixed.shape)
    H, W, D = shape
    with torch.no_grad():
        features_fix, features_mov = extract_features(
            img_fixed.float(),
            img_moving.float(),
            p["mind_r"],
            p["mind_d"],
            False,
            None,
            None,
            device,
            dtype,
        )
        fix_smooth = F.avg_pool3d(features_fix, grid_sp, stride=grid_sp)
        mov_smooth = F.avg_pool3d(features_mov, grid_sp, stride=grid_sp)
        n_ch = fix_smooth.shape[1]
        ssd, ssd_argmin = correlate(fix_smooth, mov_smooth, disp_hw, grid_sp, shape, n_ch)
        disp_mesh_t = (
            F.affine_grid(
                disp_hw * torch.eye(3, 4).to(device).to(dtype).unsqueeze(0),
                [1, 1, disp_hw * 2 + 1, disp_hw * 2 + 1, disp_hw * 2 + 1],
                align_corners=True,
            )
            .permute(0, 4, 1, 2, 3)
            .reshape(3, -1, 1)
        )
        disp_soft = coupled_convex(ssd, ssd_argmin, disp_mesh_t, grid_sp, shape)
        if p["ic"]:
            scale = (
                torch.tensor([H // grid_sp - 1, W // grid_sp - 1, D // grid_sp - 1])
                .view(1, 3, 1, 1, 1)
                .to(device)
                .to(dtype)
                / 2
            )
            ssd_, ssd_argmin_ = correlate(mov_smooth, fix_smooth, disp_hw, grid_sp, shape, n_ch)
            disp_soft_ = coupled_convex(ssd_, ssd_argmin_, disp_mesh_t, grid_sp, shape)
            disp_ice, _ = inverse_consistency(
                (disp_soft / scale).flip(1), (disp_soft_ / scale).flip(1), iter=15
            )
            disp_hr = F.interpolate(
                disp_ice.flip(1) * scale * grid_sp,
                size=shape,
                mode="trilinear",
                align_corners=False,
            )
        else:
            disp_hr = disp_soft
    if p["lambda_weight"] > 0:
        gsa = p["grid_sp_adam"]
        if coarse_niter and min(shape) // (2 * gsa) >= 2:
            disp_hr = _adam_refine(
                features_fix, features_mov, disp_hr, 2 * gsa, p["lambda_weight"], coarse_niter, 1.0
            )
        disp_hr = _adam_refine(
            features_fix, features_mov, disp_hr, gsa, p["lambda_weight"], p["selected_niter"], lr
        )
        if p["selected_smooth"] > 0:
            k = p["selected_smooth"]
            for _ in range(3):
                disp_hr = F.avg_pool3d(disp_hr, k, padding=k // 2, stride=1)
    return disp_hr[0].permute(1, 2, 3, 0).float().cpu().numpy()
