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
from .fields import check_field, compose, to_fixed_grid, warp, world_frame
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
        The 4x4 pre-alignment (world ``(z, y, x)`` µm, fixed -> moving), if any.
    jacobian : numpy.ndarray
        Jacobian determinant of ``field``.
    report : dict
        :func:`~.quality.quality_report` plus method, parameters, timing.
    warped, warped_labels : numpy.ndarray or None
        The warped moving volume and labels on the estimation grid.
    fixed, moving : numpy.ndarray
        The estimation-grid fixed and (resampled) moving volumes.
    origin, direction :
        World geometry of the fixed grid (and so of the field and the warped volumes).
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
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray | None = None


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
    origin: Sequence[float] | None = None,
    direction: Any = None,
    moving_origin: Sequence[float] | None = None,
    moving_direction: Any = None,
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
        The volumes; ``moving`` is resampled into the fixed grid (world coordinates)
        when its shape, spacing, origin or direction differ (logged; on the binned
        copies when ``bin > 1``).
    spacing : sequence of 3 float
        The fixed volume's voxel size, micrometres.
    method : {"affine", "convexadam", "voxelmorph"}
        ``affine``: pre-alignment only (``prealign`` chooses rigid or affine).
    moving_spacing : sequence of 3 float, optional
        Default: ``spacing``.
    origin, direction, moving_origin, moving_direction : optional
        World geometry of the fixed and moving volumes
        (:attr:`unified_framework.io.Volume.origin` and ``.direction``; default origin
        0 and identity). The field is returned on the fixed grid in its grid frame
        (see :mod:`.fields`); :func:`write_outputs` saves it with this geometry.
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
    landmarks : (fixed, moving) arrays ``(n, 3)``, optional
        World positions ``(z, y, x)`` in micrometres (the same as voxel index times
        spacing for volumes with origin 0 and identity direction).
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
    frame = world_frame(origin, direction)
    geometry = dict(
        moving_origin=moving_origin,
        moving_direction=moving_direction,
        fixed_origin=origin,
        fixed_direction=direction,
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
        **geometry,
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
                **geometry,
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
        tick, cpu = time.perf_counter(), time.process_time()
        result = register_affine(fixed_est, moving_est, est_spacing, kind=prealign)
        affine_matrix = result.matrix
        total = result.field(fixed_est.shape, est_spacing)
        timings["prealign_s"] = time.perf_counter() - tick
        # CPU seconds of all threads: on a shared machine wall time measures the load.
        timings["prealign_cpu_s"] = time.process_time() - cpu
        bar.update()
    parameters: dict[str, Any] = {}
    if method != "affine":
        aligned = warp(moving_est, total, est_spacing) if affine_matrix is not None else moving_est
        stage(method)
        tick, cpu = time.perf_counter(), time.process_time()
        if method == "convexadam":
            from .convexadam import ConvexAdamParams, register_convexadam

            params = params or ConvexAdamParams()
            from .convexadam import resolved_downsample

            parameters = {
                **asdict(params),
                "downsample": resolved_downsample(params, fixed_est.shape),
            }
            deformable = register_convexadam(fixed_est, aligned, est_spacing, params, device)
        else:
            from .voxelmorph import register_voxelmorph

            parameters = {"model": str(model) if not hasattr(model, "config") else "in memory"}
            deformable = register_voxelmorph(fixed_est, aligned, est_spacing, model, device)
        timings["deformable_s"] = time.perf_counter() - tick
        timings["deformable_cpu_s"] = time.process_time() - cpu
        total = compose(total, deformable, est_spacing) if affine_matrix is not None else deformable
        bar.update()
    timings["total_s"] = time.perf_counter() - started
    stage("quality")
    if landmarks is not None:
        # World positions into the fixed grid frame (where the moving volume was resampled).
        to_grid = np.linalg.inv(frame)
        landmarks = tuple(  # type: ignore[assignment]
            np.asarray(points, np.float64) @ to_grid[:3, :3].T + to_grid[:3, 3]
            for points in landmarks
        )

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
        affine=None
        if affine_matrix is None
        else (frame @ affine_matrix @ np.linalg.inv(frame)).tolist(),
        timings=timings,
    )
    bar.update()
    bar.close()
    return RegistrationResult(
        total,
        est_spacing,
        factor,
        None if affine_matrix is None else frame @ affine_matrix @ np.linalg.inv(frame),
        jacobian,
        report,
        warped,
        warped_labels,
        fixed_est,
        moving_est,
        (float(frame[0, 3]), float(frame[1, 3]), float(frame[2, 3])),
        np.array(frame[:3, :3]),
    )


def write_outputs(
    out: str | Path,
    result: RegistrationResult,
    moving_full: Any = None,
    moving_labels_full: Any = None,
    full_spacing: Sequence[float] | None = None,
    suffix: str = ".tif",
    sources: dict[str, str] | None = None,
    *,
    full_shape: Sequence[int] | None = None,
    moving_affine: Any = None,
) -> Path:
    """Write a registration's result folder atomically (all files or none).

    Files: ``field.mha`` (see :mod:`.fields`), ``warped<suffix>``,
    ``warped_labels<suffix>`` (if labels were given), ``jacobian.tif`` and
    ``quality.json``. With ``bin > 1`` and ``moving_full`` the full-resolution volume
    is warped block by block (:func:`~.fields.warp_lazy`) into ``warped.zarr`` (and
    ``warped_labels.zarr``) on the full fixed grid (``full_shape``, ``full_spacing``);
    the field stays on the binned grid. ``moving_affine`` (the full moving volume's
    :attr:`~unified_framework.io.Volume.affine`) is needed when the moving volume is
    not on the fixed grid. Every file carries the fixed volume's origin and direction
    (TIFF keeps only the spacing).

    Examples
    --------
    >>> write_outputs("reg-out", result)  # doctest: +SKIP
    """
    from ..io import Volume, write_volume
    from ..utils.atomic import atomic_path
    from .fields import moving_index_map, save_field, warp_lazy

    def on_fixed(data: Any, spacing: Sequence[float]) -> Volume:
        return Volume(data, tuple(spacing), {}, None, result.origin, result.direction)

    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        save_field(
            tmp / "field.mha", result.field, result.field_spacing, result.origin, result.direction
        )
        files = {"field": "field.mha", "jacobian": "jacobian.tif"}
        write_volume(tmp / "jacobian.tif", result.jacobian, result.field_spacing)
        if result.bin > 1 and moving_full is not None:
            assert full_spacing is not None
            shape = tuple(full_shape) if full_shape is not None else tuple(moving_full.shape)
            to_moving = (
                None
                if moving_affine is None
                else moving_index_map(moving_affine, result.origin, result.direction)
            )
            files["warped"] = "warped.zarr"
            write_volume(
                tmp / "warped.zarr",
                on_fixed(
                    warp_lazy(
                        moving_full,
                        result.field,
                        full_spacing,
                        result.field_spacing,
                        shape=shape,
                        to_moving=to_moving,
                    ),
                    full_spacing,
                ),
            )
            if moving_labels_full is not None:
                files["warped_labels"] = "warped_labels.zarr"
                write_volume(
                    tmp / "warped_labels.zarr",
                    on_fixed(
                        warp_lazy(
                            moving_labels_full,
                            result.field,
                            full_spacing,
                            result.field_spacing,
                            "nearest",
                            shape=shape,
                            to_moving=to_moving,
                        ),
                        full_spacing,
                    ),
                )
        else:
            files["warped"] = f"warped{suffix}"
            write_volume(tmp / files["warped"], on_fixed(result.warped, result.field_spacing))
            if result.warped_labels is not None:
                files["warped_labels"] = f"warped_labels{suffix}"
                write_volume(
                    tmp / files["warped_labels"],
                    on_fixed(result.warped_labels, result.field_spacing),
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


def output_grid(
    volume_shape: Sequence[int],
    spacing: Sequence[float],
    field_shape: Sequence[int],
    field_spacing: Sequence[float],
    volume_affine: Any = None,
    field_origin: Sequence[float] | None = None,
    field_direction: Any = None,
    shape: Sequence[int] | None = None,
    out_spacing: Sequence[float] | None = None,
) -> tuple[tuple[int, ...], tuple[float, ...], np.ndarray | None]:
    """Shape and spacing of :func:`apply_field`'s output and the map into the volume.

    Returns ``(shape, spacing, to_moving)``; ``to_moving`` is None when the volume is
    the output grid itself, else :func:`~.fields.moving_index_map`.

    Examples
    --------
    >>> output_grid((8, 8, 8), (1, 1, 1), (2, 2, 2), (4, 4, 4))[:2]
    ((8, 8, 8), (1.0, 1.0, 1.0))
    """
    from .fields import moving_index_map

    spacing = tuple(float(s) for s in spacing)
    frame = world_frame(field_origin, field_direction)
    own = frame @ np.diag([*spacing, 1.0])
    volume_affine = own if volume_affine is None else np.asarray(volume_affine, np.float64)
    in_frame = bool(np.allclose(volume_affine, own, atol=1e-6 * max(1.0, *spacing)))
    if shape is None:
        shape, out_spacing = (
            (tuple(volume_shape), spacing) if in_frame else (tuple(field_shape), field_spacing)
        )
    shape = tuple(int(n) for n in shape)
    out_spacing = tuple(float(s) for s in (out_spacing or spacing))
    to_moving = (
        None
        if in_frame and shape == tuple(volume_shape) and np.allclose(out_spacing, spacing)
        else moving_index_map(volume_affine, field_origin, field_direction)
    )
    return shape, out_spacing, to_moving


def apply_field(
    volume: Any,
    field: Any,
    spacing: Sequence[float],
    field_spacing: Sequence[float],
    interpolation: str = "linear",
    *,
    volume_affine: Any = None,
    field_origin: Sequence[float] | None = None,
    field_direction: Any = None,
    shape: Sequence[int] | None = None,
    out_spacing: Sequence[float] | None = None,
) -> Any:
    """Warp a volume with a saved field; a coarser field (``--bin``) is upsampled on the fly.

    The output lies on the field's world frame (``field_origin``, ``field_direction``:
    the fixed volume's) with ``shape`` and ``out_spacing``. By default that is the
    volume's own grid when the volume already lies in that frame (a moving volume on
    the fixed grid, possibly finer than a binned field), else the field's grid.
    ``volume_affine`` (the volume's :attr:`~unified_framework.io.Volume.affine`) places
    the volume in the world; default: in the field's frame with ``spacing``.

    Returns a numpy array when output, field and volume share one grid and ``volume``
    is in memory, else a dask array computed block by block.

    Examples
    --------
    >>> apply_field(np.ones((4, 4, 4)), np.zeros((3, 4, 4, 4)), (1, 1, 1), (1, 1, 1)).shape
    (4, 4, 4)
    """
    from .fields import warp_lazy

    field = check_field(field)
    shape, out_spacing, to_moving = output_grid(
        volume.shape,
        spacing,
        field.shape[1:],
        field_spacing,
        volume_affine,
        field_origin,
        field_direction,
        shape,
        out_spacing,
    )
    same_grid = shape == tuple(field.shape[1:]) and np.allclose(out_spacing, field_spacing)
    if same_grid and not is_lazy(volume):
        return warp(np.asarray(volume), field, out_spacing, interpolation, to_moving=to_moving)
    expected = [n * s for n, s in zip(shape, out_spacing)]
    covered = [n * s for n, s in zip(field.shape[1:], field_spacing)]
    if any(abs(e - c) > fs + 1e-6 for e, c, fs in zip(expected, covered, field_spacing)):
        raise InputError(
            f"field grid {tuple(field.shape[1:])} at {tuple(field_spacing)} um does not cover the volume (output grid) {shape} at {out_spacing} um; "
            "expected the field of this volume's fixed grid"
        )
    return warp_lazy(
        volume, field, out_spacing, field_spacing, interpolation, shape=shape, to_moving=to_moving
    )
