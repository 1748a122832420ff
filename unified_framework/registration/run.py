"""One registration from start to report: checks, grid, binning, pre-alignment, method, quality.

:func:`register_volumes` is what ``mdlma register``, the SLURM template, the dashboard
and the benchmark call; :func:`write_outputs` writes its result folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.volume import is_lazy
from .fields import check_field, compose, to_fixed_grid, warp
from .quality import check_labels, jacobian_determinant, quality_report

logger = logging.getLogger(__name__)

METHODS = ("affine", "convexadam", "voxelmorph")
PREALIGN = ("affine", "rigid", "none")

#: The automatic ``bin`` keeps the volume the field is estimated on below this many voxels.
MAX_ESTIMATION_VOXELS = 256**3


def auto_bin(shape: Sequence[int], max_voxels: int = MAX_ESTIMATION_VOXELS) -> int:
    """Smallest binning factor that brings ``shape`` to at most ``max_voxels`` voxels.

    Examples
    --------
    >>> auto_bin((128, 128, 128)), auto_bin((1024, 1024, 1024))
    (1, 4)
    """
    voxels = float(np.prod([int(n) for n in shape], dtype=np.float64))
    factor = 1
    while voxels / factor**3 > max_voxels:
        factor += 1
    return factor


def bin_volume(data: Any, factor: int, labels: bool = False) -> np.ndarray:
    """A ``factor``-times smaller in-memory copy: every ``factor``-th voxel after a Gaussian.

    Voxel ``i`` of the copy sits at voxel ``i * factor`` of the original, so the copy
    keeps the origin and has spacing ``factor * spacing`` (the field estimated on it
    maps back without a shift). Grey values are low-passed first (sigma ``factor / 2``)
    against aliasing; labels are just subsampled. Lazy (dask) data is filtered chunk
    by chunk with overlap, so only the small copy is ever in memory.

    Examples
    --------
    >>> bin_volume(np.ones((4, 4, 4)), 2).shape
    (2, 2, 2)
    """
    from scipy import ndimage

    if factor == 1:
        return np.asarray(data.compute() if is_lazy(data) else data)
    step = (slice(None, None, factor),) * 3
    if labels:
        small = data[step]
        return np.asarray(small.compute() if is_lazy(small) else small)
    sigma = factor / 2
    if is_lazy(data):
        smooth = data.astype(np.float32).map_overlap(
            ndimage.gaussian_filter,
            depth=int(math.ceil(4 * sigma)),
            boundary="nearest",
            sigma=sigma,
            mode="nearest",
        )
        return np.asarray(smooth[step].compute(), dtype=np.float32)
    return np.ascontiguousarray(
        ndimage.gaussian_filter(np.asarray(data, dtype=np.float32), sigma, mode="nearest")[step]
    )


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_volumes`.

    Attributes
    ----------
    field : numpy.ndarray ``(3, z, y, x)``
        The total displacement (pre-alignment composed with the deformable step) in
        micrometres, on the estimation grid (the fixed grid binned by ``bin``).
    field_spacing : tuple of float
        Voxel size of the estimation grid.
    bin : int
        Binning factor of the estimation grid.
    affine : numpy.ndarray or None
        The 4x4 pre-alignment (``(z, y, x)`` µm, fixed -> moving), if any.
    jacobian : numpy.ndarray
        Jacobian determinant of ``field``.
    report : dict
        :func:`~.quality.quality_report` plus method, parameters, timing.
    warped, warped_labels : numpy.ndarray or None
        The warped moving volume and labels on the estimation grid.
    fixed, moving : numpy.ndarray
        The estimation-grid fixed and (resampled) moving volumes.
    """

    field: np.ndarray
    field_spacing: tuple[float, ...]
    bin: int
    affine: np.ndarray | None
    jacobian: np.ndarray
    report: dict[str, Any]
    warped: np.ndarray
    warped_labels: np.ndarray | None
    fixed: np.ndarray
    moving: np.ndarray


def _check_image(data: Any, name: str) -> None:
    if len(data.shape) != 3:
        raise InputError(
            f"{name}: has {len(data.shape)} dimensions (shape {tuple(data.shape)}); expected a 3D volume"
        )
    if np.dtype(data.dtype).kind not in "uif":
        raise InputError(f"{name}: dtype {data.dtype}; expected real grey values")


def register_volumes(
    fixed: Any,
    moving: Any,
    spacing: Sequence[float],
    method: str = "convexadam",
    *,
    moving_spacing: Sequence[float] | None = None,
    prealign: str = "affine",
    bin: int | None = 1,
    params: Any = None,
    model: Any = None,
    device: str | None = None,
    fixed_labels: Any = None,
    moving_labels: Any = None,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    names: tuple[str, str] = ("fixed", "moving"),
    progress: bool = False,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` and measure the quality.

    Parameters
    ----------
    fixed, moving : numpy or dask array ``(z, y, x)``
        The volumes; ``moving`` is resampled onto the fixed grid when its shape or
        spacing differ (logged; lazy volumes must already share the grid).
    spacing : sequence of 3 float
        The fixed volume's voxel size, micrometres.
    method : {"affine", "convexadam", "voxelmorph"}
        ``affine``: pre-alignment only (``prealign`` chooses rigid or affine).
    moving_spacing : sequence of 3 float, optional
        Default: ``spacing``.
    prealign : {"affine", "rigid", "none"}
        SimpleITK pre-alignment before the deformable method.
    bin : int or None
        Estimate on a copy binned by this factor (None: :func:`auto_bin`).
    params : ConvexAdamParams, optional
        convexAdam parameters.
    model : VoxelMorphModel or path-like
        Required for ``voxelmorph``.
    device : str, optional
        Torch device of the deformable step.
    fixed_labels, moving_labels : array-like, optional
        Label volumes for Dice/HD95 before and after.
    landmarks : (fixed, moving) arrays ``(n, 3)`` in micrometres, optional
    names : (str, str)
        How to call fixed and moving in messages.
    progress : bool
        Show the steps on a progress bar (on a terminal only).

    Returns
    -------
    RegistrationResult

    Examples
    --------
    >>> from unified_framework.data import make_registration_pair
    >>> pair = make_registration_pair((32, 32, 32))
    >>> result = register_volumes(pair.fixed, pair.moving, pair.spacing, "affine", prealign="rigid")
    >>> result.field.shape
    (3, 32, 32, 32)
    """
    if method not in METHODS:
        raise InputError(f"method {method!r}; expected one of {', '.join(METHODS)}")
    if prealign not in PREALIGN:
        raise InputError(f"prealign {prealign!r}; expected one of {', '.join(PREALIGN)}")
    if method == "affine" and prealign == "none":
        raise InputError("method 'affine' needs prealign 'affine' or 'rigid'")
    if method == "voxelmorph" and model is None:
        raise InputError("method 'voxelmorph' needs a trained model (--model)")
    fixed_name, moving_name = names
    _check_image(fixed, fixed_name)
    _check_image(moving, moving_name)
    spacing = tuple(float(s) for s in spacing)
    moving_spacing = tuple(float(s) for s in (moving_spacing or spacing))
    factor = auto_bin(fixed.shape) if bin is None else int(bin)
    if factor < 1 or -(-min(fixed.shape) // factor) < 8:
        raise InputError(
            f"bin {factor}: the fixed volume {tuple(fixed.shape)} binned must keep every side >= 8 voxels"
        )
    if (tuple(moving.shape) != tuple(fixed.shape) or not np.allclose(moving_spacing, spacing)) and (
        is_lazy(moving) or is_lazy(fixed)
    ):
        raise InputError(
            f"{moving_name}: grid {tuple(moving.shape)} at {moving_spacing} um differs from the fixed grid; resample it onto the fixed grid first"
        )

    if (fixed_labels is None) != (moving_labels is None):
        raise InputError("labels: give both --fixed-labels and --moving-labels, or neither")
    for name, labels, image in (
        ("fixed labels", fixed_labels, fixed),
        ("moving labels", moving_labels, moving),
    ):
        if labels is not None and tuple(labels.shape) != tuple(image.shape):
            raise InputError(
                f"{name}: shape {tuple(labels.shape)}; expected {tuple(image.shape)} like its image"
            )

    from tqdm.auto import tqdm

    stages = [
        "prepare",
        *(["pre-align"] if prealign != "none" else []),
        *([method] if method != "affine" else []),
        "quality",
    ]
    bar = tqdm(
        total=len(stages),
        desc="register",
        unit="step",
        disable=None if progress else True,
        leave=False,
    )

    def stage(name: str) -> None:
        bar.set_postfix_str(name)
        logger.info("registration: %s", name)

    started = time.perf_counter()
    stage("prepare" if factor == 1 else f"binning by {factor}")
    est_spacing = tuple(s * factor for s in spacing)
    fixed_est = bin_volume(fixed, factor)
    moving_small = bin_volume(moving, factor)
    for name, array in ((fixed_name, fixed_est), (moving_name, moving_small)):
        if not np.isfinite(array).all():
            raise InputError(f"{name}: contains NaN or infinite values; expected finite numbers")
    moving_est = to_fixed_grid(
        moving_small,
        tuple(s * factor for s in moving_spacing),
        fixed_est.shape,
        est_spacing,
        name=moving_name,
    )
    labels_est: tuple[np.ndarray, np.ndarray] | None = None
    if fixed_labels is not None:
        fl = check_labels(
            bin_volume(fixed_labels, factor, labels=True), fixed_est.shape, "fixed labels"
        )
        ml = bin_volume(moving_labels, factor, labels=True)
        ml = check_labels(
            to_fixed_grid(
                ml,
                tuple(s * factor for s in moving_spacing),
                fixed_est.shape,
                est_spacing,
                "nearest",
                "moving labels",
            ),
            fixed_est.shape,
            "moving labels",
        )
        labels_est = (fl, ml)

    affine_matrix = None
    total = np.zeros((3, *fixed_est.shape), np.float32)
    timings: dict[str, float] = {}
    bar.update()
    if prealign != "none":
        from .affine import register_affine

        stage(f"{prealign} pre-alignment")
        tick = time.perf_counter()
        result = register_affine(fixed_est, moving_est, est_spacing, kind=prealign)
        affine_matrix = result.matrix
        total = result.field(fixed_est.shape, est_spacing)
        timings["prealign_s"] = time.perf_counter() - tick
        bar.update()
    parameters: dict[str, Any] = {}
    if method != "affine":
        aligned = warp(moving_est, total, est_spacing) if affine_matrix is not None else moving_est
        stage(method)
        tick = time.perf_counter()
        if method == "convexadam":
            from .convexadam import ConvexAdamParams, register_convexadam

            params = params or ConvexAdamParams()
            parameters = asdict(params)
            deformable = register_convexadam(fixed_est, aligned, est_spacing, params, device)
        else:
            from .voxelmorph import register_voxelmorph

            parameters = {"model": str(model) if not hasattr(model, "config") else "in memory"}
            deformable = register_voxelmorph(fixed_est, aligned, est_spacing, model, device)
        timings["deformable_s"] = time.perf_counter() - tick
        total = compose(total, deformable, est_spacing) if affine_matrix is not None else deformable
        bar.update()
    timings["total_s"] = time.perf_counter() - started
    stage("quality")

    warped = warp(moving_est, total, est_spacing)
    warped_labels = warp(labels_est[1], total, est_spacing, "nearest") if labels_est else None
    jacobian = jacobian_determinant(total, est_spacing)
    fixed_labels_est, moving_labels_est = labels_est if labels_est else (None, None)
    report = quality_report(
        total,
        est_spacing,
        fixed_est,
        moving_est,
        warped,
        fixed_labels_est,
        moving_labels_est,
        warped_labels,
        landmarks=landmarks,
        jacobian=jacobian,
    )
    report.update(
        method=method,
        prealign=prealign,
        bin=factor,
        estimation_shape=list(fixed_est.shape),
        estimation_spacing_um=list(est_spacing),
        parameters=parameters,
        affine=None if affine_matrix is None else affine_matrix.tolist(),
        timings=timings,
    )
    bar.update()
    bar.close()
    return RegistrationResult(
        total,
        est_spacing,
        factor,
        affine_matrix,
        jacobian,
        report,
        warped,
        warped_labels,
        fixed_est,
        moving_est,
    )


def write_outputs(
    out: str | Path,
    result: RegistrationResult,
    moving_full: Any = None,
    moving_labels_full: Any = None,
    full_spacing: Sequence[float] | None = None,
    suffix: str = ".tif",
    sources: dict[str, str] | None = None,
) -> Path:
    """Write a registration's result folder atomically (all files or none).

    Files: ``field.mha`` (see :mod:`.fields`), ``warped<suffix>``,
    ``warped_labels<suffix>`` (if labels were given), ``jacobian.tif`` and
    ``quality.json``. With ``bin > 1`` and ``moving_full`` the full-resolution volume
    is warped block by block (:func:`~.fields.warp_lazy`) into ``warped.zarr`` (and
    ``warped_labels.zarr``); the field stays on the binned grid.

    Examples
    --------
    >>> write_outputs("reg-out", result)  # doctest: +SKIP
    """
    from ..io import write_volume
    from ..utils.atomic import atomic_path
    from .fields import save_field, warp_lazy

    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        save_field(tmp / "field.mha", result.field, result.field_spacing)
        files = {"field": "field.mha", "jacobian": "jacobian.tif"}
        write_volume(tmp / "jacobian.tif", result.jacobian, result.field_spacing)
        if result.bin > 1 and moving_full is not None:
            assert full_spacing is not None
            files["warped"] = "warped.zarr"
            write_volume(
                tmp / "warped.zarr",
                warp_lazy(moving_full, result.field, full_spacing, result.field_spacing),
                full_spacing,
            )
            if moving_labels_full is not None:
                files["warped_labels"] = "warped_labels.zarr"
                write_volume(
                    tmp / "warped_labels.zarr",
                    warp_lazy(
                        moving_labels_full,
                        result.field,
                        full_spacing,
                        result.field_spacing,
                        "nearest",
                    ),
                    full_spacing,
                )
        else:
            files["warped"] = f"warped{suffix}"
            write_volume(tmp / files["warped"], result.warped, result.field_spacing)
            if result.warped_labels is not None:
                files["warped_labels"] = f"warped_labels{suffix}"
                write_volume(
                    tmp / files["warped_labels"], result.warped_labels, result.field_spacing
                )
        report = {**result.report, "files": files, "sources": sources or {}}
        (tmp / "quality.json").write_text(
            json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8"
        )
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value).__name__)


def apply_field(
    volume: Any,
    field: Any,
    spacing: Sequence[float],
    field_spacing: Sequence[float],
    interpolation: str = "linear",
) -> Any:
    """Warp a volume with a saved field; a coarser field (``--bin``) is upsampled on the fly.

    Returns a numpy array when the field is on the volume's grid and ``volume`` is in
    memory, else a dask array computed block by block.

    Examples
    --------
    >>> apply_field(np.ones((4, 4, 4)), np.zeros((3, 4, 4, 4)), (1, 1, 1), (1, 1, 1)).shape
    (4, 4, 4)
    """
    from .fields import warp_lazy

    field = check_field(field)
    same_grid = tuple(field.shape[1:]) == tuple(volume.shape) and np.allclose(
        spacing, field_spacing
    )
    if same_grid and not is_lazy(volume):
        return warp(np.asarray(volume), field, spacing, interpolation)
    expected = [n * s for n, s in zip(volume.shape, spacing)]
    covered = [n * s for n, s in zip(field.shape[1:], field_spacing)]
    if any(abs(e - c) > fs + 1e-6 for e, c, fs in zip(expected, covered, field_spacing)):
        raise InputError(
            f"field grid {tuple(field.shape[1:])} at {tuple(field_spacing)} um does not cover the volume {tuple(volume.shape)} at {tuple(spacing)} um; "
            "expected the field of this volume's fixed grid"
        )
    return warp_lazy(volume, field, spacing, field_spacing, interpolation)
