"""Several scans of one sample at different times: quantities, their change, and where it happened.

:func:`analyse_series` measures every scan on its own grid (quantities do not depend on
where the sample lies, and no interpolation touches them), registers every later scan
to the first (:func:`unified_framework.registration.register_volumes`: rigid by
default, on the grey images or, without them, on images made from the labels), maps
the segmentations into the first scan's frame (nearest neighbour), and reports

* every quantity at every time point, its change from the first and from the previous
  scan, and its rate per day (least-squares slope over the days);
* the *change map*: a voxel-wise transition code ``4 a + b`` between the role ``a``
  in the first scan and ``b`` in the last (roles 0 background, 1 bone, 2 residual
  material, 3 degradation layer; 8 = residual became background, 9 bone, 11 layer),
  and the transition volumes (mm³) of every pair of roles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .quantities import UM3_PER_MM3, AnalysisResult, _check_labels, _check_spacing, quantify
from .roles import ClassRoles, resolve_roles

#: Role order of the change map's codes.
ROLE_ORDER = ("background", "bone", "residual", "layer")
REGISTRATION = ("rigid", "affine", "convexadam", "none")


@dataclass
class SeriesResult:
    """Quantities over time and the change between the first and the last scan."""

    days: list[float]
    results: list[AnalysisResult]
    change: dict[str, Any]
    rates: dict[str, float | None]
    registration: list[dict[str, Any]]
    change_map: np.ndarray | None = field(default=None, repr=False)

    def table(self) -> list[dict[str, Any]]:
        """One row per time point: ``day``, the quantities and their change from the first scan."""
        first = self.results[0].row()
        rows = []
        for day, result in zip(self.days, self.results):
            row: dict[str, Any] = {"day": day, **result.row()}
            for key, value in result.row().items():
                base = first.get(key)
                if isinstance(value, (int, float)) and isinstance(base, (int, float)):
                    row[f"change_{key}"] = value - base
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "days": self.days,
            "time_points": [r.to_dict() for r in self.results],
            "table": self.table(),
            "rates_per_day": self.rates,
            "change": self.change,
            "registration": self.registration,
        }


def role_codes(labels: np.ndarray, roles: ClassRoles) -> np.ndarray:
    """Labels as role codes 0 background, 1 bone, 2 residual, 3 layer (uint8)."""
    codes = np.zeros(labels.shape, np.uint8)
    for code, role in enumerate(ROLE_ORDER):
        value = getattr(roles, role)
        if code and value is not None:
            codes[labels == value] = code
    return codes


def label_image(labels: np.ndarray, roles: ClassRoles) -> np.ndarray:
    """An image made from labels for registration: the bone, slightly blurred.

    The implant changes between scans (the residual shrinks, the layer moves), so
    registering on it would pull the scans together by the degradation itself; the
    bone around it is the steadier reference.
    """
    from scipy import ndimage as ndi

    image = (role_codes(labels, roles) == 1).astype(np.float32)
    return ndi.gaussian_filter(image, 1.0)


def _slope(x: Sequence[float], y: Sequence[Any]) -> float | None:
    pairs = [(a, b) for a, b in zip(x, y) if isinstance(b, (int, float)) and b is not None]
    if len(pairs) < 2:
        return None
    xs = np.array([p[0] for p in pairs], float)
    ys = np.array([p[1] for p in pairs], float)
    if np.ptp(xs) == 0:
        return None
    return float(np.polyfit(xs, ys, 1)[0])


def analyse_series(
    labels: Sequence[Any],
    spacing: Sequence[float] | float | None,
    days: Sequence[float],
    *,
    images: Sequence[Any] | None = None,
    registration: str = "rigid",
    names: Sequence[str] | None = None,
    keep_change_map: bool = True,
    progress: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> SeriesResult:
    """Quantify two or more scans of one sample, register them and map the change.

    Parameters
    ----------
    labels : sequence of array-like ``(z, y, x)``
        The segmentations, first = reference frame. They may differ in shape (the
        later scans are resampled onto the first's grid by the registration).
    spacing : sequence of 3 float
        Voxel size (µm) of all scans.
    days : sequence of float
        Day of each scan (e.g. days since implantation).
    images : sequence of array-like, optional
        Grey images to register (default: images made from the labels).
    registration : {"rigid", "affine", "convexadam", "none"}
        ``none``: the scans already share one frame.
    names : sequence of str, optional
        Names of the scans in messages.
    keep_change_map : bool
    progress : callable, optional
        Called with a step's name (a CLI's progress bar).
    **kwargs
        Passed to :func:`~.quantities.quantify` for every scan (roles, shells,
        initial geometry, ...; ``days`` of each scan is taken from ``days``).

    Returns
    -------
    SeriesResult

    Examples
    --------
    >>> from unified_framework.data.degrading import make_degrading_series
    >>> series = make_degrading_series([0, 20], rate=1.0, shape=(6, 96, 96), motion=0)
    >>> out = analyse_series([s[0] for s in series], 5.0, [0, 20], registration="none", shells=0)
    >>> out.rates["residual_volume_mm3"] < 0
    True
    """
    if len(labels) < 2:
        raise InputError("time series: give at least two scans", field="labels")
    if len(days) != len(labels):
        raise InputError(f"time series: {len(labels)} scans but {len(days)} days", field="days")
    if registration not in REGISTRATION:
        raise InputError(
            f"registration {registration!r}; expected one of {', '.join(REGISTRATION)}",
            field="registration",
        )
    if images is not None and len(images) != len(labels):
        raise InputError(
            f"time series: {len(labels)} scans but {len(images)} images", field="images"
        )
    names = list(names) if names is not None else [f"scan {i}" for i in range(len(labels))]
    spacing_t = _check_spacing(spacing)
    roles = resolve_roles(kwargs.pop("roles", None))
    kwargs.pop("days", None)
    day_list = [float(d) for d in days]
    arrays = [_check_labels(lab, n) for lab, n in zip(labels, names)]
    results = []
    for lab, n, day in zip(arrays, names, day_list):
        if progress:
            progress(f"quantify {n}")
        results.append(
            quantify(lab, spacing_t, roles=roles, name=n, days=day if day > 0 else None, **kwargs)
        )
    fixed = arrays[0]
    mapped_last = arrays[-1]
    reg_reports: list[dict[str, Any]] = []
    if registration != "none":
        from ..registration import apply_field, register_volumes

        fixed_img = (
            np.asarray(images[0], np.float32) if images is not None else label_image(fixed, roles)
        )
        for i in range(1, len(arrays)):
            if progress:
                progress(f"register {names[i]}")
            moving_img = (
                np.asarray(images[i], np.float32)
                if images is not None
                else label_image(arrays[i], roles)
            )
            method, prealign = (
                ("affine", registration)
                if registration in ("rigid", "affine")
                else (registration, "rigid")
            )
            result = register_volumes(fixed_img, moving_img, spacing_t, method, prealign=prealign)
            reg_reports.append(
                {
                    "scan": names[i],
                    "method": registration,
                    "affine": result.affine.tolist() if result.affine is not None else None,
                }
            )
            if i == len(arrays) - 1:
                mapped_last = np.asarray(
                    apply_field(arrays[i], result.field, spacing_t, result.field_spacing, "nearest")
                )
    elif mapped_last.shape != fixed.shape:
        raise InputError(
            f"time series: {names[-1]} has shape {mapped_last.shape}, {names[0]} {fixed.shape}; "
            "register them (registration 'rigid')",
            field="registration",
        )
    a = role_codes(fixed, roles)
    b = role_codes(mapped_last, roles)
    change_map = (4 * a + b).astype(np.uint8)
    voxel = float(np.prod(spacing_t)) / UM3_PER_MM3
    counts = np.bincount(change_map.reshape(-1), minlength=16)[:16].reshape(4, 4) * voxel
    transitions = {
        f"{ROLE_ORDER[i]}->{ROLE_ORDER[j]}": float(counts[i, j])
        for i in range(4)
        for j in range(4)
        if i != j
    }
    change = {
        "from": names[0],
        "to": names[-1],
        "transitions_mm3": transitions,
        "codes": {
            f"{ROLE_ORDER[i]}->{ROLE_ORDER[j]}": 4 * i + j for i in range(4) for j in range(4)
        },
    }
    rows = [r.row() for r in results]
    rates = {key: _slope(day_list, [row.get(key) for row in rows]) for key in rows[0]}
    return SeriesResult(
        day_list, results, change, rates, reg_reports, change_map if keep_change_map else None
    )
