"""A screw model of the initial implant, fitted to the residual material.

When the as-implanted geometry is not given as a mask, the issue allows "a
cylinder/screw model fitted to the residual material". :func:`fit_screw` fits a
single-start screw whose surface radius about its axis is

``R(s, theta) = r_core + d · P(frac(hand · theta / 2 pi - s / pitch + phase))``

with ``s`` the position along the axis, ``theta`` the angle about it (from the
``reference`` direction), ``r_core`` the core (root) radius, ``d`` the thread depth and
``P`` the symmetric trapezoidal thread profile of :func:`thread_profile` (root and crest
flats of 3/16 of the pitch each, straight flanks between -- the profile of the screw
phantom, ``unified_framework.data.phantom``). ``hand`` (+1/-1) is the handedness in the
volume's ``(z, y, x)`` index frame.

The fit, in four steps:

1. axis and centre: :func:`~.quantities.fit_cylinder` (principal directions of the
   residual voxels);
2. surface points: the centres of the residual material's boundary voxels (those
   with a face neighbour outside it), in cylinder coordinates ``(s, theta, rho)``, the
   radius plus half a voxel (the surface lies half a voxel beyond the centres; the
   blurred marching-cubes surface would round the thread's corners and make the
   thread about half a voxel shallower);
3. pitch and handedness by phase-dispersion minimisation: for candidate pitches
   (4 voxels to half the length) and both hands the points are folded by their thread
   phase; the true helix is the one whose folded radii scatter least (a helix is a
   function of ``theta/2pi - s/pitch`` only for the true pitch, so there are no
   aliases at half or double the pitch);
4. phase by a scan of 64 shifts (``r_core`` and ``d`` by linear least squares for
   each), then all four of ``r_core, d, pitch, phase`` by robust nonlinear least squares
   (:func:`scipy.optimize.least_squares`, soft-L1 loss with a one-voxel scale, so pits,
   cavities and end faces do not pull the fit).

The fitted surface follows the *residual* material. Degradation is modelled as a
radial recession that keeps the pitch and the thread depth, so the initial screw is the
fitted one with its core radius set from the nominal major (outer) radius
``initial_radius - d`` when given, else grown by the 95th percentile of the points'
radial distance beyond the fitted surface (the least degraded surface, as the cylinder
fit does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

#: Width of the crest and of the root flat, as a fraction of the pitch.
FLAT = 0.1875


def thread_profile(turn: np.ndarray) -> np.ndarray:
    """The trapezoidal thread profile ``P`` (0 at the root, 1 at the crest) of the phase ``turn``.

    ``P(t) = clip(1.6 (1 - |2 frac(t) - 1|) - 0.3, 0, 1)``: root and crest flats of
    3/16 of the pitch, straight flanks.

    Examples
    --------
    >>> thread_profile(np.array([0.0, 0.25, 0.5, 1.5])).round(2).tolist()
    [0.0, 0.5, 1.0, 1.0]
    """
    t = np.asarray(turn) % 1.0
    return np.clip(1.6 * (1.0 - np.abs(2.0 * t - 1.0)) - 0.3, 0.0, 1.0)


def _frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``axis`` to a frame; ``e2 = e1 x axis``.

    With the axis along ``z`` and ``e1`` along ``x`` (index order ``(z, y, x)``), ``e2``
    is ``y`` and ``theta = atan2(y, x)``, the phantoms' angle.
    """
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    e1 = helper - (helper @ axis) * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e1, axis)
    return e1, e2


def _cylindrical(
    xyz: np.ndarray, centre: np.ndarray, axis: np.ndarray, e1: np.ndarray, e2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rel = xyz - centre
    s = rel @ axis
    a, b = rel @ e1, rel @ e2
    return s, np.arctan2(b, a), np.hypot(a, b)


def _dispersion(
    s: np.ndarray, theta: np.ndarray, rho: np.ndarray, pitch: float, hand: int, bins: int = 32
) -> float:
    """Mean within-bin variance of ``rho`` folded by the thread phase (smaller: better)."""
    turn = (hand * theta / (2 * math.pi) - s / pitch) % 1.0
    k = np.minimum((turn * bins).astype(np.intp), bins - 1)
    n = np.bincount(k, minlength=bins)
    total = np.bincount(k, rho, minlength=bins)
    squares = np.bincount(k, rho * rho, minlength=bins)
    used = n > 0
    within = squares[used] - total[used] ** 2 / n[used]
    return float(within.sum() / max(1, rho.size))


def _linear(p: np.ndarray, rho: np.ndarray) -> tuple[float, float, float]:
    """Least squares ``rho ~ a + b p``: ``(a, b, mean squared residual)``."""
    design = np.stack([np.ones_like(p), p], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, rho, rcond=None)
    residual = rho - a - b * p
    return float(a), float(b), float(np.mean(residual**2))


def fit_screw_points(
    points: np.ndarray,
    centre: Sequence[float],
    axis: Sequence[float],
    voxel: float,
    pitch: float | None = None,
    limit: int = 60_000,
    radial_offset: float = 0.0,
) -> dict[str, Any]:
    """Fit the screw surface ``R(s, theta)`` to surface points (µm) about a known axis.

    Parameters
    ----------
    points : numpy.ndarray ``(n, 3)``
        Surface points in µm, ``(z, y, x)``.
    centre, axis : sequence of 3 float
        A point on the axis (µm) and the axis direction.
    voxel : float
        The voxel size (µm): the scale of the robust loss and of the pitch search.
    pitch : float, optional
        Known pitch (µm): only the phase, radius and depth are searched (the pitch is
        still refined).
    limit : int
        At most this many points (every k-th) are used.
    radial_offset : float
        Added to every point's distance from the axis (µm): half a voxel for voxel
        centres.

    Returns
    -------
    dict
        ``centre_um``, ``axis``, ``reference`` (the ``theta = 0`` direction),
        ``core_radius_um``, ``thread_depth_um``, ``pitch_um``, ``phase``,
        ``handedness``, ``rms_um`` (robust fit's RMS residual of the inlier points,
        within 3 voxels of the surface), ``inliers`` (their share).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s, th = rng.uniform(0, 300, 5000), rng.uniform(-np.pi, np.pi, 5000)
    >>> r = 60 + 15 * thread_profile(th / (2 * np.pi) - s / 50 + 0.3)
    >>> pts = np.stack([s, r * np.sin(th), r * np.cos(th)], axis=1)
    >>> fit = fit_screw_points(pts, (0, 0, 0), (1, 0, 0), 2.0)
    >>> round(fit["pitch_um"], 1), round(fit["core_radius_um"], 1), round(fit["thread_depth_um"], 1)
    (50.0, 60.0, 15.0)
    """
    from scipy.optimize import least_squares

    centre_arr = np.asarray(centre, float)
    axis_arr = np.asarray(axis, float)
    axis_arr /= np.linalg.norm(axis_arr)
    e1, e2 = _frame(axis_arr)
    pts = np.asarray(points, float)
    if pts.shape[0] > limit:
        pts = pts[:: int(math.ceil(pts.shape[0] / limit))]
    s, theta, rho = _cylindrical(pts, centre_arr, axis_arr, e1, e2)
    rho += radial_offset
    length = float(np.ptp(s)) if s.size else 0.0
    if s.size < 50 or length < 8 * voxel:
        raise InputError(
            "initial geometry: too little residual material to fit a screw (need several thread turns); "
            "give the initial implant as a mask or use --cylinder",
            field="initial",
        )
    # 3. pitch and hand by phase-dispersion minimisation, coarse then fine.
    step = max(1, s.size // 20_000)
    ss, tt, rr = s[::step], theta[::step], rho[::step]
    if pitch is not None:
        if not (math.isfinite(pitch) and pitch > 0):
            raise InputError(f"pitch: {pitch!r} must be a positive length in µm", field="pitch")
        candidates = np.asarray([pitch * f for f in np.linspace(0.95, 1.05, 21)])
    else:
        candidates = np.geomspace(4 * voxel, max(5 * voxel, length / 2), 400)
    best = min(
        ((_dispersion(ss, tt, rr, p, hand), p, hand) for hand in (1, -1) for p in candidates),
        key=lambda item: item[0],
    )
    _, p0, hand = best
    fine = np.linspace(p0 * 0.985, p0 * 1.015, 31)
    _, p0, _ = min(((_dispersion(ss, tt, rr, p, hand), p, hand) for p in fine), key=lambda x: x[0])
    # 4. phase scan with a linear fit of radius and depth, then robust nonlinear refinement.
    base = hand * theta / (2 * math.pi) - s / p0
    scan = []
    for phase in np.arange(64) / 64:
        a, b, err = _linear(thread_profile(base + phase), rho)
        if b > 0:
            scan.append((err, phase, a, b))
    if not scan:
        raise InputError(
            "initial geometry: no thread found on the residual material; use --cylinder",
            field="initial",
        )
    _, phase0, a0, b0 = min(scan)

    def residuals(x: np.ndarray) -> np.ndarray:
        a, b, p, phase = x
        return a + b * thread_profile(hand * theta / (2 * math.pi) - s / p + phase) - rho

    fit = least_squares(
        residuals,
        np.array([a0, b0, p0, phase0]),
        loss="soft_l1",
        f_scale=voxel,
        x_scale=np.array([voxel, voxel, voxel, 0.02]),
        diff_step=np.array([1e-4, 1e-4, 1e-5, 1e-3]),
    )
    a, b, p, phase = (float(v) for v in fit.x)
    misfit = residuals(fit.x)
    inlier = np.abs(misfit) < 3 * voxel
    return {
        "model": "screw",
        "centre_um": centre_arr.tolist(),
        "axis": axis_arr.tolist(),
        "reference": e1.tolist(),
        "core_radius_um": a,
        "thread_depth_um": b,
        "pitch_um": p,
        "phase": phase % 1.0,
        "handedness": int(hand),
        "rms_um": float(np.sqrt(np.mean(misfit[inlier] ** 2))) if inlier.any() else None,
        "inliers": float(inlier.mean()),
        "_excess": misfit,  # radial distance of every point beyond the fitted surface (dropped by fit_screw)
    }


def fit_screw(
    residual: np.ndarray,
    spacing: Sequence[float],
    offset: Sequence[int] = (0, 0, 0),
    radius: float | None = None,
    extent_mask: Any = None,
    extent_offset: Sequence[int] | None = None,
    points: np.ndarray | None = None,
    pitch: float | None = None,
) -> dict[str, Any]:
    """Fit the initial implant as a screw to the residual material.

    Parameters
    ----------
    residual : numpy.ndarray of bool
        The residual material (a box of the label volume).
    spacing : sequence of 3 float
        Voxel size in µm.
    offset : sequence of 3 int
        Index of ``residual[0, 0, 0]`` in the label volume.
    radius : float, optional
        Nominal major (outer, thread crest) radius of the implant in µm; the initial
        core radius is then ``radius - thread depth``.
    extent_mask, extent_offset
        The mask (and its offset) whose extent along the axis the initial screw spans
        (default: the residual material), as for :func:`~.quantities.fit_cylinder`.
    points : numpy.ndarray ``(n, 3)``, optional
        Surface points of the residual material in µm (default: the centres of its
        boundary voxels, half a voxel added to their radius).
    pitch : float, optional
        Known pitch in µm (refined by the fit).

    Returns
    -------
    dict
        The screw for :func:`rasterize_screw`: ``centre_um``, ``axis``, ``reference``,
        ``core_radius_um`` (initial), ``fitted_core_radius_um`` (the residual's),
        ``thread_depth_um``, ``pitch_um``, ``phase``, ``handedness``, ``start_um``,
        ``stop_um``, ``major_radius_um``, ``rms_um``, ``inliers``.

    Examples
    --------
    >>> from unified_framework.data.degrading import make_degrading_screw
    >>> labels, truth = make_degrading_screw((40, 80, 80), depth=0.0)
    >>> fit = fit_screw(labels == 2, (5.0, 5.0, 5.0))
    >>> abs(fit["pitch_um"] - truth["screw"]["pitch_um"]) < 2
    True
    """
    from .quantities import fit_cylinder

    spacing_arr = np.asarray(spacing, float)
    h = float(spacing_arr.min())
    cylinder = fit_cylinder(residual, spacing, offset, None, extent_mask, extent_offset)
    radial_offset = 0.0
    if points is None:
        points = _boundary_points(residual, spacing_arr, offset)
        radial_offset = h / 2
    screw = fit_screw_points(
        points, cylinder["centre_um"], cylinder["axis"], h, pitch, radial_offset=radial_offset
    )
    excess = screw.pop("_excess")
    fitted_core = screw["core_radius_um"]
    if radius is not None:
        if not (math.isfinite(radius) and radius > 0):
            raise InputError(
                f"initial_radius: {radius!r} must be a positive length in µm",
                field="initial_radius",
            )
        core = float(radius) - screw["thread_depth_um"]
    else:
        core = fitted_core + max(0.0, float(np.percentile(excess, 95)))
    screw.update(
        core_radius_um=core,
        fitted_core_radius_um=fitted_core,
        major_radius_um=core + screw["thread_depth_um"],
        start_um=cylinder["start_um"],
        stop_um=cylinder["stop_um"],
    )
    return screw


def _boundary_points(mask: np.ndarray, spacing: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """µm positions of the voxels of ``mask`` with a face neighbour outside it (slab by slab)."""
    from scipy import ndimage as ndi

    parts = []
    structure = ndi.generate_binary_structure(3, 1)
    for start in range(0, mask.shape[0], 32):
        lo, hi = max(0, start - 1), min(mask.shape[0], start + 33)
        block = mask[lo:hi]
        inner = ndi.binary_erosion(block, structure, border_value=1)
        edge = block & ~inner
        edge = edge[start - lo : start - lo + min(32, mask.shape[0] - start)]
        pts = np.argwhere(edge)
        pts[:, 0] += start
        parts.append(pts)
    points = np.concatenate(parts) if parts else np.zeros((0, 3), np.intp)
    return (points + np.asarray(offset)) * spacing


def rasterize_screw(
    screw: dict[str, Any], shape: Sequence[int], spacing: Sequence[float], box: Sequence[slice]
) -> np.ndarray:
    """The voxels of ``box`` whose centres lie inside the screw (bool array of the box's shape).

    Examples
    --------
    >>> screw = {"centre_um": [0, 20, 20], "axis": [1, 0, 0], "reference": [0, 0, 1],
    ...          "core_radius_um": 8, "thread_depth_um": 4, "pitch_um": 10, "phase": 0,
    ...          "handedness": 1, "start_um": -1, "stop_um": 40}
    >>> inside = rasterize_screw(screw, (40, 41, 41), (1, 1, 1), (slice(0, 40), slice(0, 41), slice(0, 41)))
    >>> bool(np.pi * 8**2 * 40 < inside.sum() < np.pi * 12**2 * 40)
    True
    """
    spacing_arr = np.asarray(spacing, float)
    centre = np.asarray(screw["centre_um"], float)
    axis = np.asarray(screw["axis"], float)
    e1 = np.asarray(screw["reference"], float)
    e2 = np.cross(e1, axis)
    grids = [(np.arange(s.start, s.stop) * h - c) for s, h, c in zip(box, spacing_arr, centre)]
    out = np.zeros(tuple(s.stop - s.start for s in box), bool)
    y = grids[1][:, None]
    x = grids[2][None, :]
    hand, pitch, phase = int(screw["handedness"]), float(screw["pitch_um"]), float(screw["phase"])
    for i, z in enumerate(grids[0]):
        along = axis[0] * z + axis[1] * y + axis[2] * x
        a = e1[0] * z + e1[1] * y + e1[2] * x
        b = e2[0] * z + e2[1] * y + e2[2] * x
        rho = np.hypot(a, b)
        turn = hand * np.arctan2(b, a) / (2 * math.pi) - along / pitch + phase
        surface = screw["core_radius_um"] + screw["thread_depth_um"] * thread_profile(turn)
        out[i] = (rho <= surface) & (along >= screw["start_um"]) & (along <= screw["stop_um"])
    return out
