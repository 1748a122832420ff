"""Run a method on files, measure and score it: the reports behind method comparisons.

:func:`run_classical` runs a baseline in-process; :func:`evaluate_command` runs any
segmentation program (e.g. ``mdlma sun predict``) and reports it in the same form, so
a comparison table treats every method alike. Used by ``mdlma segment`` and the
dashboard's comparison page, locally or inside SLURM jobs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .baselines import majority_order, relabel, segment

#: ``label_order`` value that maps intensity classes by majority vote against ground truth.
ORDER_FROM_TRUTH = "truth"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


def run_classical(
    input: str | Path,
    output: str | Path,
    method: str,
    classes: int = 3,
    smoothing: float | None = None,
    label_order: Sequence[int] | str | None = None,
    ground_truth: str | Path | None = None,
    report: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Segment a volume file with a classical method and score it against ground truth.

    Parameters
    ----------
    input : path-like
        Grey-value volume (any format :func:`unified_framework.io.read_volume` reads).
    output : path-like
        Label volume to write (format from the suffix), with the input's spacing.
    method : {"multi-otsu", "watershed"}
    classes : int
        Number of intensity classes.
    smoothing : float, optional
        Gaussian sigma in voxels (default: the method's).
    label_order : sequence of int or "truth", optional
        Class number per intensity rank (see :func:`.relabel`); ``"truth"`` derives it
        from ``ground_truth`` by majority vote (:func:`.majority_order`).
    ground_truth : path-like, optional
        Label volume to score against.
    report : path-like, optional
        Write the returned dict as JSON here (atomically).
    class_names : sequence of str, optional
        Name of each ground-truth class, indexed by label (``class_names[0]`` is the
        background), for the score table.

    Returns
    -------
    dict
        ``method``, ``input``, ``output``, parameters, ``shape``, ``resources``
        (:class:`~unified_framework.metrics.ResourceUsage` fields) and, with ground truth,
        ``scores`` (one dict per class, as :func:`~unified_framework.metrics.score_volumes`).
    """
    from ..errors import InputError
    from ..io import read_volume, write_volume
    from ..metrics import ResourceMeter
    from ..utils.atomic import write_text_atomic

    if label_order == ORDER_FROM_TRUTH and ground_truth is None:
        raise InputError("label order: 'truth' needs a ground truth volume")
    volume = read_volume(input, allow_nan=False, grey=True)
    truth = read_volume(ground_truth, grey=True).data if ground_truth is not None else None
    with ResourceMeter(gpu=False) as meter:
        labels = segment(volume.data, method, classes=classes, smoothing=smoothing, name=str(input))
        order: list[int] | None
        if label_order == ORDER_FROM_TRUTH:
            assert truth is not None  # checked above: 'truth' needs a ground truth volume
            order = majority_order(labels, truth, classes)
        else:
            order = None if label_order is None else [int(v) for v in label_order]
        if order is not None:
            if len(order) != classes:
                raise InputError(f"label order: expected {classes} class numbers, got {len(order)}")
            labels = relabel(labels, order)
    write_volume(output, volume.with_data(labels))  # on the input's grid: the labels overlay it
    result: dict[str, Any] = {
        "method": method,
        "input": str(input),
        "output": str(output),
        "classes": classes,
        "smoothing": smoothing,
        "label_order": order,
        "label_order_from_truth": label_order == ORDER_FROM_TRUTH,
        "shape": list(labels.shape),
        "spacing": list(volume.spacing),
        "resources": meter.finished_usage().to_dict(),
    }
    if truth is not None:
        result["ground_truth"] = str(ground_truth)
        result["scores"] = score_rows(
            labels, truth, volume.spacing, str(output), str(ground_truth), class_names
        )
    if report is not None:
        write_text_atomic(report, json.dumps(result, indent=2, default=str) + "\n")
    return result


def score_rows(
    labels,
    truth,
    spacing: Sequence[float],
    pred_name: str,
    gt_name: str,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-class scores as JSON-ready dicts (:func:`~unified_framework.metrics.score_volumes` rows).

    ``class_names[label]`` names each class (``class_names[0]`` is the background);
    NaN becomes ``None``.
    """
    from ..metrics import score_volumes

    table = score_volumes(labels, truth, spacing=spacing, pred_name=pred_name, gt_name=gt_name)
    if class_names is not None:
        table["name"] = [
            class_names[int(label)] if int(label) < len(class_names) else str(label)
            for label in table["label"]
        ]
    return [{k: _json_safe(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def evaluate_command(
    command: Sequence[str],
    output: str | Path,
    ground_truth: str | Path | None = None,
    report: str | Path | None = None,
    method: str = "",
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run any segmentation command, measure it, and score the label volume it writes.

    The comparison of learned models with the baselines (e.g. ``mdlma sun predict``)
    goes through here so that every method is timed and scored the same way, whatever
    program it is.

    Parameters
    ----------
    command : sequence of str
        The command line (no shell); it must write ``output``.
    output : path-like
        The label volume the command writes.
    ground_truth, report, class_names
        As for :func:`run_classical`.
    method : str
        Name of the method in the report (default: the program's name).

    Returns
    -------
    dict
        ``method``, ``command``, ``output``, ``shape``, ``spacing``, ``resources`` (the
        command's wall time; CPU time and peak memory of it and its children; GPU use
        sampled through NVML) and ``scores`` with ground truth.

    Raises
    ------
    InputError
        The command failed (its last error line is quoted) or wrote no ``output``.
    """
    import subprocess

    from ..errors import InputError
    from ..io import read_volume
    from ..metrics import ResourceMeter
    from ..utils.atomic import write_text_atomic

    command = [str(part) for part in command]
    if not command:
        raise InputError("command: nothing to run")
    with ResourceMeter(gpu=True) as meter:
        done = subprocess.run(
            command, capture_output=True, text=True, errors="replace", check=False
        )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise InputError(
            f"{Path(command[0]).name}: failed with exit status {done.returncode}"
            + (f" ({lines[-1]})" if lines else "")
        )
    if not Path(output).exists():
        raise InputError(f"{output}: the command finished but wrote no output")
    labels = read_volume(output, grey=True)
    result: dict[str, Any] = {
        "method": method or Path(command[0]).name,
        "command": command,
        "output": str(output),
        "shape": list(labels.shape),
        "spacing": list(labels.spacing),
        "resources": meter.finished_usage().to_dict(),
    }
    if ground_truth is not None:
        truth = read_volume(ground_truth, grey=True)
        result["ground_truth"] = str(ground_truth)
        result["scores"] = score_rows(
            labels.data, truth.data, labels.spacing, str(output), str(ground_truth), class_names
        )
    if report is not None:
        write_text_atomic(report, json.dumps(result, indent=2, default=str) + "\n")
    return result
