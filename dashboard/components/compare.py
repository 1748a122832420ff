"""Segmentation comparison: datasets with ground truth, method commands, runs and score tables.

A comparison *run* is a folder ``<MDLMA_HOME>/comparisons/<dataset>/<run-id>/`` with
one label volume and one JSON report per method. Every method is one small Python
script (:func:`write_method_script`, calling ``mdlma segment classical`` or ``mdlma
segment evaluate -- mdlma sun predict ...``) that writes both; the page runs it as a
local subprocess for small data or submits the very same script with the
``python-script`` template as a SLURM job, so both ways give identical files and the
score table is read back from the reports alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unified_framework.errors import InputError

from .paths import walk_files
from .volumes import guess_role, volume_suffix

DATASETS = "datasets"
RUNS = "comparisons"
#: Datasets up to this many voxels may run inside the dashboard's own machine.
LOCAL_VOXEL_LIMIT = 256**3
_GT_WORDS = re.compile(r"[_\-. ]?(gt|ground[_\-]?truth|truth|labels?|seg(mentation)?|mask)$", re.I)


@dataclass
class Dataset:
    """A grey-value volume and its ground truth."""

    name: str
    image: Path
    truth: Path
    class_names: list[str] = field(default_factory=list)


@dataclass
class Method:
    """One method of a comparison: a classical baseline or a trained SUN model."""

    kind: str  # "classical" or "sun"
    name: str  # unique within a run; file stem of its outputs
    options: dict = field(default_factory=dict)
    model: Path | None = None


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(volume_suffix(path) or "")]


def pair_volumes(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Pair images with their ground truth in one folder.

    A ground truth is a file whose name suggests labels (``*_gt``, ``*_labels``,
    ``*_ground_truth``); it pairs with the image whose name is the same without that
    ending, or with the only image of the folder.
    """
    truths = [p for p in paths if guess_role(p) in ("ground_truth", "labels")]
    images = [p for p in paths if p not in truths and guess_role(p) == "image"]
    pairs = []
    for truth in truths:
        base = _GT_WORDS.sub("", _stem(truth))
        match = [image for image in images if _stem(image) == base]
        if not match and len(images) == 1:
            match = images
        if match:
            pairs.append((match[0], truth))
    return pairs


def find_datasets(root: Path, max_depth: int = 4) -> list[Dataset]:
    """Datasets (image + ground truth pairs) below ``root``, named by their folder and image."""
    root = Path(root)
    by_folder: dict[Path, list[Path]] = {}
    for path in walk_files(
        root, lambda p: volume_suffix(p) is not None, max_depth=max_depth, limit=2000
    ):
        if RUNS in path.relative_to(root).parts:
            continue  # outputs of earlier comparisons are not datasets
        by_folder.setdefault(path.parent, []).append(path)
    datasets = []
    for folder, paths in sorted(by_folder.items()):
        info = _dataset_info(folder)
        for image, truth in pair_volumes(paths):
            name = str(folder.relative_to(root) / _stem(image)) if folder != root else _stem(image)
            datasets.append(Dataset(name, image, truth, info.get("class_names", [])))
    return datasets


def _dataset_info(folder: Path) -> dict:
    try:
        info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def make_phantom_dataset(root: Path, shape: Sequence[int], seed: int) -> Dataset:
    """Write an implant phantom and its ground truth below ``root/datasets`` (see :mod:`unified_framework.data`)."""
    from unified_framework.data.phantom import CLASS_NAMES, make_implant_phantom
    from unified_framework.io import write_volume
    from unified_framework.utils.atomic import write_text_atomic

    shape = tuple(int(n) for n in shape)
    image, labels = make_implant_phantom(shape, seed=int(seed))
    folder = Path(root) / DATASETS / f"phantom-{'x'.join(map(str, shape))}-seed{int(seed)}"
    write_volume(folder / "image.tif", image, spacing=(5.0, 5.0, 5.0))
    write_volume(folder / "image_gt.tif", labels, spacing=(5.0, 5.0, 5.0))
    write_text_atomic(
        folder / "dataset.json",
        json.dumps(
            {
                "class_names": list(CLASS_NAMES),
                "source": "implant phantom",
                "shape": list(shape),
                "seed": int(seed),
            }
        )
        + "\n",
    )
    return Dataset(
        str(folder.relative_to(root)) + "/image",
        folder / "image.tif",
        folder / "image_gt.tif",
        list(CLASS_NAMES),
    )


def voxels(path: Path) -> int:
    """Number of voxels of a volume file (reads only its header)."""
    from unified_framework.io import read_volume

    return int(np.prod(read_volume(path, lazy=True).shape))


def method_name(kind: str, options: dict, model: Path | None = None) -> str:
    """A file-name-safe method name, e.g. ``watershed-c5-s1.0`` or ``sun-mymodel``."""
    if kind == "sun":
        return "sun-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).stem)
    parts = [options["method"], f"c{options['classes']}"]
    if options.get("smoothing") is not None:
        parts.append(f"s{float(options['smoothing']):g}")
    return "-".join(parts)


def method_args(method: Method, dataset: Dataset, run_dir: Path) -> list[str]:
    """The ``mdlma`` arguments that run ``method`` on ``dataset``, writing its labels and report to ``run_dir``."""
    labels, report = run_dir / f"{method.name}.tif", run_dir / f"{method.name}.json"
    names = ["--class-names", *dataset.class_names] if dataset.class_names else []
    if method.kind == "classical":
        options = method.options
        args = [
            "segment",
            "classical",
            str(dataset.image),
            "-o",
            str(labels),
            "--method",
            options["method"],
            "--classes",
            str(int(options["classes"])),
            "--ground-truth",
            str(dataset.truth),
            "--report",
            str(report),
        ]
        if options.get("smoothing") is not None:
            args += ["--smoothing", str(float(options["smoothing"]))]
        if options.get("label_order"):
            args += ["--label-order", str(options["label_order"])]
        return args + names
    if method.kind == "sun":
        predict = [
            sys.executable,
            "-m",
            "unified_framework",
            "sun",
            "predict",
            str(dataset.image),
            "--model",
            str(method.model),
            "--out",
            str(labels),
        ]
        return [
            "segment",
            "evaluate",
            "--out",
            str(labels),
            "--ground-truth",
            str(dataset.truth),
            "--report",
            str(report),
            "--method",
            method.name,
            *names,
            "--",
            *predict,
        ]
    raise InputError(f"method {method.name}: unknown kind {method.kind!r}")


def write_method_script(method: Method, dataset: Dataset, run_dir: Path) -> Path:
    """Write ``<run_dir>/<method>.py``, which runs the method; the same file runs here or as a SLURM job."""
    from unified_framework.utils.atomic import write_text_atomic

    args = method_args(method, dataset, run_dir)
    text = (
        f'"""Comparison method {method.name} on {dataset.name} (written by the MDLMA dashboard)."""\n'
        "import sys\n\nfrom unified_framework.cli.main import main\n\n"
        f"sys.exit(main({args!r}))\n"
    )
    return write_text_atomic(run_dir / f"{method.name}.py", text)


def new_run_dir(root: Path, dataset: Dataset) -> Path:
    """A fresh, timestamped run folder for ``dataset``."""
    folder = (
        Path(root)
        / RUNS
        / re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.name)
        / time.strftime("%Y%m%d-%H%M%S")
    )
    suffix = 0
    while folder.exists():
        suffix += 1
        folder = folder.with_name(f"{folder.name.split('.')[0]}.{suffix}")
    folder.mkdir(parents=True)
    return folder


def list_runs(root: Path, dataset: Dataset) -> list[Path]:
    """Run folders of ``dataset``, newest first."""
    folder = Path(root) / RUNS / re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.name)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True)


def save_run_plan(
    run_dir: Path,
    dataset: Dataset,
    methods: Sequence[Method],
    where: str,
    job_ids: dict | None = None,
) -> None:
    """Record what a run contains, so the page can show pending methods and their jobs."""
    from unified_framework.utils.atomic import write_text_atomic

    plan = {
        "dataset": dataset.name,
        "image": str(dataset.image),
        "ground_truth": str(dataset.truth),
        "where": where,
        "methods": [m.name for m in methods],
        "jobs": job_ids or {},
    }
    write_text_atomic(run_dir / "run.json", json.dumps(plan, indent=2) + "\n")


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """The run plan and the reports written so far (unreadable reports skipped)."""
    try:
        plan = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        plan = {}
    reports = []
    for path in sorted(run_dir.glob("*.json")):
        if path.name == "run.json" or path.stem not in plan.get("methods", [path.stem]):
            continue
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict):
            report["name"] = path.stem
            report["labels_path"] = str(path.with_suffix(".tif"))
            reports.append(report)
    return plan, reports


def score_table(reports: Sequence[dict]) -> pd.DataFrame:
    """One row per method and class: Dice, IoU, F1, HD95, time, CPU time, memory, GPU."""
    rows = []
    for report in reports:
        resources = report.get("resources") or {}
        gpu_memory = resources.get("gpu_memory_peak_bytes")
        for score in report.get("scores") or []:
            rows.append(
                {
                    "method": report["name"],
                    "label": score.get("label"),
                    "class": score.get("name"),
                    "dice": score.get("dice"),
                    "iou": score.get("iou"),
                    "f1": score.get("f1"),
                    "hd95": score.get("hd95"),
                    "time_s": resources.get("wall_time_s"),
                    "cpu_time_s": resources.get("cpu_time_s"),
                    "cpu_use": (
                        resources["cpu_time_s"] / resources["wall_time_s"]
                        if resources.get("wall_time_s")
                        else None
                    ),
                    "peak_rss_mib": (
                        resources["peak_rss_bytes"] / 2**20
                        if resources.get("peak_rss_bytes")
                        else None
                    ),
                    "gpu": resources.get("gpu_name") or "",
                    "gpu_util_mean_pct": resources.get("gpu_utilisation_mean_percent"),
                    "gpu_memory_peak_mib": gpu_memory / 2**20 if gpu_memory else None,
                    "order_from_truth": bool(report.get("label_order_from_truth")),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "method",
            "label",
            "class",
            "dice",
            "iou",
            "f1",
            "hd95",
            "time_s",
            "cpu_time_s",
            "cpu_use",
            "peak_rss_mib",
            "gpu",
            "gpu_util_mean_pct",
            "gpu_memory_peak_mib",
            "order_from_truth",
        ],
    )


def run_locally(
    scripts: dict[str, Path],
    on_start: Callable[[str, int], None] | None = None,
    timeout: float = 3600,
) -> dict[str, str]:
    """Run method scripts one after another on this machine; returns the error line per failed method."""
    errors = {}
    for number, (name, script) in enumerate(scripts.items()):
        if on_start:
            on_start(name, number)
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=script.parent,
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            errors[name] = lines[-1] if lines else f"exit status {done.returncode}"
    return errors
