"""Does my segmentation method change my science? One scan, several segmentations, every quantity.

:func:`compare_methods` quantifies each segmentation of the same scan with the same
settings and puts the quantities side by side; with a ground truth (a label volume or
a dict of exact values such as the analytic phantom's) every value also gets its
relative error ``(value - truth) / |truth|``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from .quantities import AnalysisResult, quantify


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value is not None else None


def compare_methods(
    segmentations: Mapping[str, Any],
    spacing: Any,
    *,
    truth: Any = None,
    progress: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Quantify several segmentations of one scan and compare them (and with the truth).

    Parameters
    ----------
    segmentations : mapping name -> labels
        The segmentations (same grid).
    spacing : sequence of 3 float
    truth : labels array or mapping, optional
        Ground-truth labels (quantified like the methods) or exact values by quantity
        name (e.g. :func:`~unified_framework.data.degrading.make_degrading_cylinder`'s
        truth; shells as ``bv_tv_<inner>_<outer>um`` or a ``shells`` list).
    progress : callable, optional
        Called with each method's name.
    **kwargs
        Passed to :func:`~.quantities.quantify`.

    Returns
    -------
    dict
        ``methods`` (names), ``quantities`` (names), ``values`` (quantity -> method ->
        value), ``truth`` (quantity -> value or None), ``relative_error`` (quantity ->
        method -> error or None), ``spread`` (quantity -> (max - min) / |mean| over
        the methods) and ``results`` (method -> full result dict).

    Examples
    --------
    >>> from unified_framework.data.degrading import make_degrading_cylinder
    >>> labels, truth = make_degrading_cylinder((4, 64, 64))
    >>> eroded = labels.copy(); eroded[(labels == 3)] = 0
    >>> table = compare_methods({"a": labels, "b": eroded}, 5.0, truth=truth, shells=0)
    >>> table["relative_error"]["layer_volume_mm3"]["b"]
    -1.0
    """
    if not segmentations:
        raise InputError("compare: give at least one segmentation", field="labels")
    results: dict[str, AnalysisResult] = {}
    for name, labels in segmentations.items():
        if progress is not None:
            progress(name)
        results[name] = quantify(labels, spacing, name=name, **kwargs)
    rows = {name: r.row() for name, r in results.items()}
    truth_row: dict[str, Any] = {}
    if truth is not None:
        if isinstance(truth, Mapping):
            truth_row = dict(truth)
            for shell in truth.get("shells", []) or []:
                truth_row[f"bv_tv_{shell['inner_um']:g}_{shell['outer_um']:g}um"] = shell["bv_tv"]
        else:
            truth_row = quantify(truth, spacing, name="ground truth", **kwargs).row()
    quantities = list(next(iter(rows.values())))
    values = {q: {m: rows[m].get(q) for m in rows} for q in quantities}
    truth_values = {q: _number(truth_row.get(q)) for q in quantities}
    errors: dict[str, dict[str, float | None]] = {}
    spread: dict[str, float | None] = {}
    for q in quantities:
        t = truth_values[q]
        errors[q] = {}
        for m in rows:
            v = _number(values[q][m])
            errors[q][m] = (v - t) / abs(t) if (v is not None and t) else None
        numbers = [x for x in (_number(values[q][m]) for m in rows) if x is not None]
        mean = sum(numbers) / len(numbers) if numbers else 0.0
        spread[q] = (max(numbers) - min(numbers)) / abs(mean) if numbers and mean else None
    return {
        "methods": list(rows),
        "quantities": quantities,
        "values": values,
        "truth": truth_values if truth is not None else None,
        "relative_error": errors if truth is not None else None,
        "spread": spread,
        "results": {name: r.to_dict() for name, r in results.items()},
    }
