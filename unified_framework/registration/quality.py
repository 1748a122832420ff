"""Quality of a registration: plausibility of the field and agreement before/after.

:func:`quality_report` gathers, for one registration,

* the Jacobian determinant of ``p -> p + u(p)`` (:func:`jacobian_determinant`): its
  range and the share of folding voxels (``det J <= 0``, where the map is not
  invertible);
* Dice and HD95 per class of the warped moving labels against the fixed labels,
  before (moving labels as they are) and after, through
  :func:`unified_framework.metrics.score_volumes`;
* the target registration error of landmark pairs (:func:`read_landmarks`), before
  and after, in micrometres and voxels;
* global normalised cross-correlation and mutual information of the images, before
  and after.

The report is a JSON-ready dict; :func:`quality_rows` flattens it into the
before/after table ``mdlma register`` prints.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .fields import check_field

#: Columns of a landmark CSV: fixed and moving positions in micrometres, (z, y, x).
LANDMARK_COLUMNS = ("fixed_z", "fixed_y", "fixed_x", "moving_z", "moving_y", "moving_x")


def jacobian_determinant(field: Any, spacing: Sequence[float]) -> np.ndarray:
    """Determinant of the Jacobian of ``p -> p + u(p)`` at every voxel (central differences).

    1 means no local volume change, 2 a doubling, ``<= 0`` folding.

    Examples
    --------
    >>> float(jacobian_determinant(np.zeros((3, 4, 4, 4)), (1, 1, 1)).mean())
    1.0
    """
    field = check_field(field)
    grads = [
        np.gradient(field[c], *[float(s) for s in spacing]) for c in range(3)
    ]  # grads[c][a] = du_c/dp_a
    j = [[grads[c][a] + (1.0 if a == c else 0.0) for a in range(3)] for c in range(3)]
    det = (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )
    return det.astype(np.float32)


def folding_fraction(jacobian: np.ndarray) -> float:
    """Share of voxels with ``det J <= 0`` (0..1).

    Examples
    --------
    >>> folding_fraction(np.array([1.0, -0.5, 0.9, 1.1]))
    0.25
    """
    return float(np.count_nonzero(jacobian <= 0)) / max(1, jacobian.size)


def read_landmarks(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read landmark pairs: CSV with columns :data:`LANDMARK_COLUMNS` in micrometres.

    Returns
    -------
    fixed, moving : numpy.ndarray ``(n, 3)``
        Positions ``(z, y, x)`` in micrometres.

    Examples
    --------
    >>> fixed, moving = read_landmarks("landmarks.csv")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such landmark file")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in LANDMARK_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(LANDMARK_COLUMNS)} (micrometres)"
            )
        rows = []
        for number, row in enumerate(reader, start=2):
            try:
                values = [float(row[c]) for c in LANDMARK_COLUMNS]
            except (TypeError, ValueError):
                raise InputError(
                    f"{path}: line {number} has a value that is not a number; expected positions in micrometres"
                ) from None
            if not all(math.isfinite(v) for v in values):
                raise InputError(f"{path}: line {number} has a NaN or infinite position")
            rows.append(values)
    if not rows:
        raise InputError(f"{path}: no landmarks; expected at least one row")
    table = np.asarray(rows, dtype=np.float64)
    return table[:, :3], table[:, 3:]


def write_landmarks(path: str | Path, fixed: np.ndarray, moving: np.ndarray) -> Path:
    """Write landmark pairs (micrometres) as CSV with the columns of :func:`read_landmarks`.

    Examples
    --------
    >>> write_landmarks("landmarks.csv", np.zeros((1, 3)), np.ones((1, 3)))  # doctest: +SKIP
    """
    from ..utils.atomic import write_text_atomic

    lines = [",".join(LANDMARK_COLUMNS)]
    lines += [
        ",".join(f"{v:.4f}" for v in (*f, *m))
        for f, m in zip(np.asarray(fixed), np.asarray(moving))
    ]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def target_registration_error(
    field: Any, spacing: Sequence[float], fixed_points: np.ndarray, moving_points: np.ndarray
) -> np.ndarray:
    """Distance in micrometres between ``p + u(p)`` and the moving landmark, per pair.

    A zero field gives the error before registration.

    Examples
    --------
    >>> u = np.zeros((3, 4, 4, 4), np.float32); u[0] = 1.0
    >>> target_registration_error(u, (1, 1, 1), np.array([[1.0, 1, 1]]), np.array([[2.0, 1, 1]])).tolist()
    [0.0]
    """
    field = check_field(field)
    fixed_points = np.asarray(fixed_points, dtype=np.float64)
    index = (fixed_points / np.asarray(spacing, dtype=np.float64)).T
    shape = np.asarray(field.shape[1:])
    if (index < -0.5).any() or (index > shape[:, None] - 0.5).any():
        raise InputError(
            "landmarks: a fixed landmark lies outside the fixed volume; expected positions in micrometres inside it"
        )
    moved = fixed_points + np.stack(
        [ndimage.map_coordinates(field[c], index, order=1, mode="nearest") for c in range(3)],
        axis=1,
    )
    return np.linalg.norm(moved - np.asarray(moving_points, dtype=np.float64), axis=1)


def normalised_cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two volumes (1: identical up to a linear grey-value map).

    Examples
    --------
    >>> x = np.arange(10.0)
    >>> round(normalised_cross_correlation(x, 2 * x + 1), 6)
    1.0
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else 0.0


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Mutual information in nats of the joint grey-value histogram (``bins`` per axis).

    Invariant to any one-to-one grey-value map, so it also compares two modalities.

    Examples
    --------
    >>> x = np.random.default_rng(0).random(1000)
    >>> mutual_information(x, x) > mutual_information(x, np.random.default_rng(1).random(1000))
    True
    """
    joint, _, _ = np.histogram2d(np.ravel(a), np.ravel(b), bins=bins)
    joint /= max(joint.sum(), 1)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(joint[nonzero] / (pa @ pb)[nonzero])).sum())


def _label_scores(
    warped: np.ndarray, fixed: np.ndarray, spacing: Sequence[float]
) -> dict[str, dict[str, float | None]]:
    from ..metrics import score_volumes

    table = score_volumes(
        warped, fixed, spacing=spacing, pred_name="warped moving labels", gt_name="fixed labels"
    )
    out = {}
    for row in table.itertuples():
        out[str(row.label)] = {"dice": _number(row.dice), "hd95_um": _number(row.hd95)}
    return out


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def check_labels(labels: Any, shape: Sequence[int], name: str) -> np.ndarray:
    """Return ``labels`` as an integer array on the fixed grid with at least one class.

    Examples
    --------
    >>> check_labels(np.ones((2, 2, 2), np.uint8), (2, 2, 2), "labels").dtype
    dtype('uint8')
    """
    array = np.asarray(labels)
    if array.shape != tuple(shape):
        raise InputError(
            f"{name}: shape {array.shape}; expected {tuple(shape)} like the fixed volume"
        )
    if array.dtype.kind not in "uib":
        raise InputError(f"{name}: dtype {array.dtype}; expected integer class labels")
    if not np.any(array):
        raise InputError(
            f"{name}: holds no label (only 0 = background); expected at least one labelled class"
        )
    return array


def quality_report(
    field: Any,
    spacing: Sequence[float],
    fixed: np.ndarray | None = None,
    moving: np.ndarray | None = None,
    warped: np.ndarray | None = None,
    fixed_labels: np.ndarray | None = None,
    moving_labels: np.ndarray | None = None,
    warped_labels: np.ndarray | None = None,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    jacobian: np.ndarray | None = None,
) -> dict[str, Any]:
    """Quality figures of one registration, before and after, as a JSON-ready dict.

    Parameters
    ----------
    field : array-like ``(3, z, y, x)``
        The displacement field, micrometres (see :mod:`.fields`).
    spacing : sequence of 3 float
        Voxel size, micrometres.
    fixed, moving, warped : numpy.ndarray, optional
        Images on the fixed grid: NCC and MI before (fixed vs moving) and after
        (fixed vs warped).
    fixed_labels, moving_labels, warped_labels : numpy.ndarray, optional
        Label volumes: Dice and HD95 per class before and after.
    landmarks : (fixed, moving) arrays ``(n, 3)``, optional
        Landmark positions in micrometres (:func:`read_landmarks`).
    jacobian : numpy.ndarray, optional
        :func:`jacobian_determinant` of ``field`` if already computed.

    Returns
    -------
    dict
        ``jacobian`` (min, max, mean, folding_fraction), and where inputs allow
        ``images`` (ncc/mi before/after), ``labels`` (per class before/after, mean Dice)
        and ``landmarks`` (TRE median/mean/max before/after, µm and voxels).

    Examples
    --------
    >>> report = quality_report(np.zeros((3, 4, 4, 4)), (1, 1, 1))
    >>> report["jacobian"]["folding_fraction"]
    0.0
    """
    field = check_field(field)
    if jacobian is None:
        jacobian = jacobian_determinant(field, spacing)
    report: dict[str, Any] = {
        "jacobian": {
            "min": float(jacobian.min()),
            "max": float(jacobian.max()),
            "mean": float(jacobian.mean()),
            "folding_fraction": folding_fraction(jacobian),
        },
        "max_displacement_um": float(np.sqrt((field**2).sum(0)).max()),
    }
    if fixed is not None and moving is not None and warped is not None:
        report["images"] = {
            "ncc": {
                "before": normalised_cross_correlation(fixed, moving),
                "after": normalised_cross_correlation(fixed, warped),
            },
            "mi": {
                "before": mutual_information(fixed, moving),
                "after": mutual_information(fixed, warped),
            },
        }
    if fixed_labels is not None and moving_labels is not None and warped_labels is not None:
        before = _label_scores(moving_labels, fixed_labels, spacing)
        after = _label_scores(warped_labels, fixed_labels, spacing)
        report["labels"] = {
            "per_class": {
                label: {"before": before.get(label), "after": after.get(label)}
                for label in sorted(set(before) | set(after), key=int)
            },
            "mean_dice": {"before": _mean_dice(before), "after": _mean_dice(after)},
        }
    if landmarks is not None:
        fixed_points, moving_points = landmarks
        zero = np.zeros_like(field)
        voxel = float(np.mean(spacing))
        tre = {
            "before": target_registration_error(zero, spacing, fixed_points, moving_points),
            "after": target_registration_error(field, spacing, fixed_points, moving_points),
        }
        report["landmarks"] = {
            "count": int(len(fixed_points)),
            **{
                f"tre_{stat}_um": {
                    when: float(getattr(np, stat)(values)) for when, values in tre.items()
                }
                for stat in ("median", "mean", "max")
            },
            "tre_median_voxels": {
                when: float(np.median(values)) / voxel for when, values in tre.items()
            },
        }
    return report


def _mean_dice(scores: dict[str, dict[str, float | None]]) -> float | None:
    values = [s["dice"] for s in scores.values() if s["dice"] is not None]
    return float(np.mean(values)) if values else None


def quality_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Flatten a report into ``(figure, before, after)`` rows for a table.

    Examples
    --------
    >>> quality_rows(quality_report(np.zeros((3, 4, 4, 4)), (1, 1, 1)))[0]
    ('folding voxels (det J <= 0)', '', '0.000 %')
    """

    def fmt(value: Any, digits: int = 3) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    jac = report["jacobian"]
    rows = [
        ("folding voxels (det J <= 0)", "", f"{100 * jac['folding_fraction']:.3f} %"),
        ("det J min / max", "", f"{jac['min']:.3f} / {jac['max']:.3f}"),
    ]
    if "images" in report:
        for name in ("ncc", "mi"):
            rows.append(
                (
                    name.upper(),
                    fmt(report["images"][name]["before"]),
                    fmt(report["images"][name]["after"]),
                )
            )
    if "labels" in report:
        labels = report["labels"]
        rows.append(
            ("mean Dice", fmt(labels["mean_dice"]["before"]), fmt(labels["mean_dice"]["after"]))
        )
        for label, scores in labels["per_class"].items():
            before, after = scores["before"] or {}, scores["after"] or {}
            rows.append((f"Dice class {label}", fmt(before.get("dice")), fmt(after.get("dice"))))
            rows.append(
                (
                    f"HD95 class {label} (um)",
                    fmt(before.get("hd95_um"), 1),
                    fmt(after.get("hd95_um"), 1),
                )
            )
    if "landmarks" in report:
        marks = report["landmarks"]
        rows.append(
            (
                f"TRE median (um, {marks['count']} landmarks)",
                fmt(marks["tre_median_um"]["before"], 2),
                fmt(marks["tre_median_um"]["after"], 2),
            )
        )
        rows.append(
            (
                "TRE median (voxels)",
                fmt(marks["tre_median_voxels"]["before"], 2),
                fmt(marks["tre_median_voxels"]["after"], 2),
            )
        )
    return rows
