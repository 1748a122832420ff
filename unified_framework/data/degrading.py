"""An analytic "degrading cylinder" phantom whose degradation quantities are known exactly.

The screw phantom (:mod:`.phantom`) looks like a scan; this one is built so that every
quantity of :func:`unified_framework.analysis.quantify` has a closed-form value:

* the initial implant is a cylinder of radius ``r0`` along ``z`` through the centre of
  the ``(y, x)`` plane (plus ``shift``), spanning the whole ``z`` extent ``L`` (no end
  caps: the volume border cuts it);
* after ``depth`` of radial degradation the residual material is the cylinder of radius
  ``r = r0 - depth``; the degradation layer is the annulus ``r <= rho < r + t``;
* bone fills angular sectors of concentric shells around the implant surface
  ``rho = r + t``: in shell ``k`` (``r + t + k w <= rho < r + t + (k+1) w``) the bone
  covers the angles ``0 <= theta < 2 pi f_k``, so BV/TV of shell ``k`` is ``f_k`` and
  the bone-implant contact is ``f_0`` (the bone of shell 0 touches the implant).

Exact values (:func:`make_degrading_cylinder`'s ``truth``):

``V_res = pi r^2 L``, ``V_layer = pi ((r+t)^2 - r^2) L``, ``V_0 = pi r0^2 L``,
degraded fraction ``1 - r^2/r0^2``, degradation depth ``r0 - r``, equivalent depth
``(V_0 - V_res) / A_0 = (r0^2 - r^2) / (2 r0)``, local thickness ``t`` everywhere in
the layer (the largest ball in an annulus of width ``t`` has diameter ``t``), surface
areas ``2 pi r L``, ``2 pi (r+t) L``, ``2 pi r0 L``, BIC ``100 f_0`` %.

A time series (:func:`make_degrading_series`) recedes the residual radius at a known
rate, ``r(d) = r0 - rate d``, and moves the sample between scans so that the scans must
be registered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError


def make_degrading_cylinder(
    shape: Sequence[int] = (32, 96, 96),
    spacing: Sequence[float] = (5.0, 5.0, 5.0),
    *,
    radius: float | None = None,
    depth: float | None = None,
    layer: float | None = None,
    shell_width: float | None = None,
    fractions: Sequence[float] = (0.4, 0.25, 0.1),
    fragments: int = 1,
    shift: Sequence[float] = (0.0, 0.0, 0.0),
    day: float | None = None,
    rate: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels of a degrading cylindrical implant with bone in known shell sectors, and the exact quantities.

    Parameters
    ----------
    shape : sequence of 3 int
        ``(z, y, x)``.
    spacing : sequence of 3 float
        Voxel size in µm (anisotropic allowed: the geometry is in µm).
    radius : float, optional
        Initial implant radius ``r0`` in µm; default 0.3 of the smaller in-plane half
        width.
    depth : float, optional
        Radial degradation depth ``r0 - r`` in µm; default ``rate * day`` if both are
        given, else 0.25 ``r0``.
    layer : float, optional
        Degradation layer thickness ``t`` in µm; default 6 of the smallest voxel size.
    shell_width : float, optional
        Width ``w`` of the bone shells in µm; default 6 of the smallest voxel size.
    fractions : sequence of float
        Bone fraction ``f_k`` of each shell (each in ``[0, 1]``); ``f_0`` is the
        bone-implant contact.
    fragments : int
        Cut the residual material into this many pieces along ``z`` (gaps of two
        slices filled with degradation layer; the layer is then not uniformly ``t``
        thick, so thickness truth is given only for 1 fragment).
    shift : sequence of 3 float
        Translation of the whole sample in µm ``(z, y, x)`` (for time series).
    day, rate : float, optional
        Days since implantation and degradation rate in µm/day (``depth = rate *
        day``); recorded in the truth.

    Returns
    -------
    labels : numpy.ndarray of uint8
        0 background, 1 bone, 2 residual material, 3 degradation layer.
    truth : dict
        The exact quantities (names as in :class:`~unified_framework.analysis.AnalysisResult`)
        and the geometry (``cylinder`` as :func:`~unified_framework.analysis.rasterize_cylinder`
        takes it, for the initial implant).

    Examples
    --------
    >>> labels, truth = make_degrading_cylinder((8, 64, 64))
    >>> sorted(np.unique(labels).tolist()), truth["bic_percent"]
    ([0, 1, 2, 3], 40.0)
    """
    try:
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
        shift = tuple(float(s) for s in shift)
    except (TypeError, ValueError):
        raise InputError("degrading cylinder: shape, spacing and shift must be numbers") from None
    if (
        len(shape) != 3
        or min(shape) < 4
        or len(spacing) != 3
        or min(spacing) <= 0
        or len(shift) != 3
    ):
        raise InputError(
            f"degrading cylinder: shape {shape} (3 sizes >= 4) and spacing {spacing} (3 positive sizes) expected"
        )
    h = min(spacing)
    half = 0.5 * min(shape[1] * spacing[1], shape[2] * spacing[2])
    r0 = float(radius) if radius is not None else 0.3 * half
    if depth is None:
        depth = rate * day if (rate is not None and day is not None) else 0.25 * r0
    t = float(layer) if layer is not None else 6 * h
    w = float(shell_width) if shell_width is not None else 6 * h
    fractions = [float(f) for f in fractions]
    if not (0 <= depth < r0) or t <= 0 or w <= 0 or any(not 0 <= f <= 1 for f in fractions):
        raise InputError(
            f"degrading cylinder: need 0 <= depth ({depth}) < radius ({r0}), layer and shell width > 0, fractions in [0, 1]"
        )
    r = r0 - depth
    r_out = r + t
    if r_out + len(fractions) * w > half:
        raise InputError(
            f"degrading cylinder: implant ({r_out:.1f} µm) and {len(fractions)} shells of {w:g} µm do not fit in {half:.1f} µm"
        )
    zc = np.arange(shape[0]) * spacing[0] - shift[0]
    y = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing[1] - shift[1]
    x = (np.arange(shape[2]) - (shape[2] - 1) / 2) * spacing[2] - shift[2]
    rho = np.hypot(y[:, None], x[None, :])
    turn = (np.arctan2(y[:, None], x[None, :]) / (2 * np.pi)) % 1.0
    plane = np.zeros(rho.shape, np.uint8)
    for k, f in enumerate(fractions):
        ring = (rho >= r_out + k * w) & (rho < r_out + (k + 1) * w) & (turn < f)
        plane[ring] = 1
    # Asymmetric bone blocks in three corners, beyond the shells: landmarks that let
    # a registration find the motion between scans (the rings alone are symmetric).
    outer = r_out + len(fractions) * w
    for cy, cx, size in ((-0.78, -0.78, 0.16), (-0.78, 0.72, 0.1), (0.7, 0.8, 0.12)):
        block = (np.abs(y[:, None] - cy * half) < size * half) & (
            np.abs(x[None, :] - cx * half) < 0.6 * size * half
        )
        plane[block & (rho > outer + w)] = 1
    plane[(rho >= r) & (rho < r_out)] = 3
    plane[rho < r] = 2
    labels = np.broadcast_to(plane, shape).copy()
    gap_slices = 0
    if fragments > 1:
        core = rho < r
        for i in range(1, int(fragments)):
            z0 = int(round(i * shape[0] / fragments)) - 1
            for z in (z0, z0 + 1):
                labels[z][core] = 3
                gap_slices += 1
    del zc
    length = shape[0] * spacing[0]
    solid_len = (shape[0] - gap_slices) * spacing[0]
    mm3, mm2 = 1e9, 1e6
    v0 = math.pi * r0**2 * length
    v_res = math.pi * r**2 * solid_len
    v_layer = math.pi * (r_out**2 - r**2) * length + math.pi * r**2 * (length - solid_len)
    truth: dict[str, Any] = {
        "residual_volume_mm3": v_res / mm3,
        "layer_volume_mm3": v_layer / mm3,
        "implant_volume_mm3": (v_res + v_layer) / mm3,
        "initial_volume_mm3": v0 / mm3,
        "degraded_fraction": 1 - v_res / v0,
        "degradation_depth_um": float(depth),
        "equivalent_depth_um": (v0 - v_res) / (2 * math.pi * r0 * length),
        "layer_thickness_mean_um": t if fragments <= 1 else None,
        "residual_surface_mm2": 2 * math.pi * r * length / mm2 if fragments <= 1 else None,
        "implant_surface_mm2": 2 * math.pi * r_out * length / mm2,
        "initial_surface_mm2": 2 * math.pi * r0 * length / mm2,
        "bic_percent": 100.0 * fractions[0] if fractions else 0.0,
        "fragments": int(max(fragments, 1)),
        "shells": [
            {"inner_um": k * w, "outer_um": (k + 1) * w, "bv_tv": f}
            for k, f in enumerate(fractions)
        ],
        "shell_width_um": w,
        "initial_radius_um": r0,
        "residual_radius_um": r,
        "layer_um": t,
        "days": day,
        "rate_um_per_day": rate,
        "spacing_um": list(spacing),
        "shape": list(shape),
        "shift_um": list(shift),
        "cylinder": {
            "centre_um": [
                0.0,
                (shape[1] - 1) / 2 * spacing[1] + shift[1],
                (shape[2] - 1) / 2 * spacing[2] + shift[2],
            ],
            "axis": [1.0, 0.0, 0.0],
            "radius_um": r0,
            "start_um": -spacing[0],
            "stop_um": length + spacing[0],
        },
    }
    return labels, truth


def make_degrading_series(
    days: Sequence[float],
    rate: float,
    shape: Sequence[int] = (32, 96, 96),
    spacing: Sequence[float] = (5.0, 5.0, 5.0),
    *,
    motion: float = 2.0,
    **kwargs: Any,
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Scans of one degrading cylinder at several days, moved between scans.

    The residual radius recedes at ``rate`` µm/day (``depth = rate * day``); scan ``i``
    is translated by ``i * motion`` voxels (smallest voxel size) along ``y`` and
    ``-0.5 i * motion`` along ``x``, so a time-series analysis must register the scans.

    Examples
    --------
    >>> series = make_degrading_series([0, 10, 20], rate=1.5, shape=(8, 112, 112))
    >>> [truth["degradation_depth_um"] for _, truth in series]
    [0.0, 15.0, 30.0]
    """
    if len(days) < 1 or not (math.isfinite(rate) and rate >= 0):
        raise InputError("degrading series: give at least one day and a rate >= 0 µm/day")
    h = min(float(s) for s in spacing)
    out = []
    for i, day in enumerate(days):
        shift = (0.0, i * motion * h, -0.5 * i * motion * h)
        out.append(
            make_degrading_cylinder(
                shape,
                spacing,
                day=float(day),
                rate=float(rate),
                depth=float(rate) * float(day),
                shift=shift,
                **kwargs,
            )
        )
    return out


def make_degrading_screw(
    shape: Sequence[int] = (48, 96, 96),
    spacing: Sequence[float] = (5.0, 5.0, 5.0),
    *,
    core: float | None = None,
    thread_depth: float | None = None,
    pitch: float | None = None,
    phase: float = 0.3,
    depth: float | None = None,
    layer: float | None = None,
    day: float | None = None,
    rate: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels of a degrading threaded implant (a screw along ``z``) and its exact quantities.

    The initial screw has the surface radius ``R0(z, theta) = core + thread_depth · P(turn)``
    with ``turn = theta / 2 pi - z / pitch + phase`` and ``P`` the trapezoidal thread profile
    (:func:`unified_framework.analysis.screw.thread_profile`, as the screw phantom's);
    ``theta = atan2(y, x)`` about the centre of the ``(y, x)`` plane. Degradation is a
    radial recession by ``depth``: the residual material is ``rho < R0 - depth``, the
    degradation layer ``R0 - depth <= rho < R0 - depth + layer``; a bone ring of 40 %
    of the angles lies beyond the thread crests. The screw spans the whole ``z`` extent
    ``L`` (cut by the volume border).

    Exact values (``truth``): ``V = pi L E[R^2]`` with ``E`` the mean over one turn
    (every plane holds one full turn of the profile), so ``V_0 = pi L E[R0^2]``,
    ``V_res = pi L E[(R0 - depth)^2]``, ``V_layer = pi L (E[(R0 - depth + layer)^2] -
    E[(R0 - depth)^2])``, degraded fraction ``1 - V_res / V_0``; ``screw`` holds the
    initial screw's parameters (as :func:`~unified_framework.analysis.screw.rasterize_screw`
    takes them) for the fit to recover.

    Parameters
    ----------
    shape, spacing : sequence of 3
        ``(z, y, x)``; µm (anisotropic allowed).
    core, thread_depth, pitch : float, optional
        Initial core (root) radius, thread depth and pitch in µm; defaults 0.35, 0.1
        and 0.3 of the smaller in-plane half width.
    phase : float
        Thread phase (turns).
    depth : float, optional
        Radial recession in µm; default ``rate * day`` if both given, else 3 voxels.
    layer : float, optional
        Degradation layer thickness (radial) in µm; default 4 voxels.
    day, rate : float, optional
        Recorded in the truth (``depth = rate * day``).

    Examples
    --------
    >>> labels, truth = make_degrading_screw((16, 80, 80))
    >>> sorted(np.unique(labels).tolist()), round(truth["screw"]["pitch_um"])
    ([0, 1, 2, 3], 60)
    """
    from ..analysis.screw import thread_profile

    try:
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError("degrading screw: shape and spacing must be numbers") from None
    if len(shape) != 3 or min(shape) < 4 or len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(
            f"degrading screw: shape {shape} (3 sizes >= 4) and spacing {spacing} (3 positive sizes) expected"
        )
    h = min(spacing)
    half = 0.5 * min(shape[1] * spacing[1], shape[2] * spacing[2])
    a0 = float(core) if core is not None else 0.35 * half
    d_t = float(thread_depth) if thread_depth is not None else 0.1 * half
    p = float(pitch) if pitch is not None else 0.3 * half
    if depth is None:
        depth = rate * day if (rate is not None and day is not None) else 3 * h
    t = float(layer) if layer is not None else 4 * h
    if not (0 <= depth < a0) or t <= 0 or d_t <= 0 or p <= 0:
        raise InputError(
            f"degrading screw: need 0 <= depth ({depth}) < core ({a0}), thread depth, pitch and layer > 0"
        )
    major = a0 + d_t
    if major - depth + t + 6 * h > half:
        raise InputError(
            f"degrading screw: screw ({major:.1f} µm) and layer do not fit in {half:.1f} µm"
        )
    y = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing[1]
    x = (np.arange(shape[2]) - (shape[2] - 1) / 2) * spacing[2]
    rho = np.hypot(y[:, None], x[None, :])
    theta = np.arctan2(y[:, None], x[None, :])
    turn_plane = (np.arctan2(y[:, None], x[None, :]) / (2 * np.pi)) % 1.0
    labels = np.zeros(shape, np.uint8)
    ring = (rho >= major + 2 * h) & (rho < major + 6 * h) & (turn_plane < 0.4)
    for i in range(shape[0]):
        z = i * spacing[0]
        r0 = a0 + d_t * thread_profile(theta / (2 * np.pi) - z / p + phase)
        plane = labels[i]
        plane[ring] = 1
        plane[rho < r0 - depth + t] = 3
        plane[rho < r0 - depth] = 2
    length = shape[0] * spacing[0]
    grid = thread_profile((np.arange(200_000) + 0.5) / 200_000)

    def mean_square(offset: float) -> float:
        return float(np.mean((a0 + offset + d_t * grid) ** 2))

    mm3 = 1e9
    v0 = math.pi * length * mean_square(0.0)
    v_res = math.pi * length * mean_square(-depth)
    v_layer = math.pi * length * (mean_square(-depth + t) - mean_square(-depth))
    truth: dict[str, Any] = {
        "residual_volume_mm3": v_res / mm3,
        "layer_volume_mm3": v_layer / mm3,
        "implant_volume_mm3": (v_res + v_layer) / mm3,
        "initial_volume_mm3": v0 / mm3,
        "degraded_fraction": 1 - v_res / v0,
        "radial_depth_um": float(depth),
        "layer_um": t,
        "fragments": 1,
        "days": day,
        "rate_um_per_day": rate,
        "spacing_um": list(spacing),
        "shape": list(shape),
        "initial_radius_um": major,
        "screw": {
            "centre_um": [0.0, (shape[1] - 1) / 2 * spacing[1], (shape[2] - 1) / 2 * spacing[2]],
            "axis": [1.0, 0.0, 0.0],
            "reference": [0.0, 0.0, 1.0],
            "core_radius_um": a0,
            "thread_depth_um": d_t,
            "pitch_um": p,
            "phase": float(phase) % 1.0,
            "handedness": 1,
            "start_um": -spacing[0],
            "stop_um": length + spacing[0],
            "major_radius_um": major,
        },
    }
    return labels, truth
