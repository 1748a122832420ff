"""Compare segmentation methods on the same data: train (or take trained models), predict, score.

Methods (names for ``--methods``):

========================  ===============================================================
``sun-9``, ``sun-3``      one SUN model (trained once, 9 axes), predicted along 9 / 3 axes
``nnunet-2d``             nnU-Net 2d, nnU-Net's own inference (z slices)
``nnunet-2d-9axes``       the same nnU-Net 2d model along SUN's nine axes, SUN's soft voting
``nnunet-3d``             nnU-Net 3d_fullres
``classical``             multi-Otsu, classes ordered by majority vote on the training data
========================  ===============================================================

Every method runs by itself (:func:`run_method`, one SLURM array task each) and writes
``OUT/methods/<method>.json``; :func:`merge` reads them into one table
(``comparison.json``, ``comparison.csv`` and a bar chart ``comparison.png``): per test
case and class Dice, HD95, ASSD, predicted/true volume, with each method's training and
prediction time, peak RSS and GPU use (``unified_framework.metrics``).

Methods that share a model (``sun-9``/``sun-3``, ``nnunet-2d``/``nnunet-2d-9axes``) train
it once under ``OUT/work/models``: whichever runs first trains it while holding a lock
on it, the other waits and uses it, so array tasks running side by side score exactly
what one process running the methods in turn scores. A model's training time and peak
memory are recorded next to it (``<model>.train.json``) and reported for every method
using it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .utils.atomic import atomic_path

METHODS = ("sun-9", "sun-3", "nnunet-2d", "nnunet-2d-9axes", "nnunet-3d", "classical")


@dataclass
class Budget:
    """Training budgets, stated per method in the table."""

    sun_steps: int = 300
    sun_depth: int = 3
    sun_width: int = 8
    sun_input_size: int = 64
    nnunet_epochs: int = 1
    nnunet_iterations: int = 20
    nnunet_dataset_id: int = 990
    nnunet_final_validation: bool = True
    device: str = "auto"
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def _pairs(pairs: Sequence[Sequence[str | Path]], what: str) -> list[tuple[Path, Path]]:
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise InputError(f"--{what}: expected IMAGE LABELS pairs, got {list(pair)}")
        image, labels = Path(pair[0]), Path(pair[1])
        for p in (image, labels):
            if not p.exists():
                raise InputError(f"{p}: no such file (--{what})")
        out.append((image, labels))
    if not out:
        raise InputError(f"--{what}: at least one IMAGE LABELS pair")
    return out


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    from .io import read_volume

    volume = read_volume(path, expect_ndim=3, grey=True)
    return np.asarray(volume.data), tuple(volume.spacing or (1.0, 1.0, 1.0))


def _class_names(train: list[tuple[Path, Path]]) -> list[str]:
    top = max(int(_read(lab)[0].max()) for _, lab in train)
    return ["background", *[f"class_{i}" for i in range(1, top + 1)]]


@contextlib.contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (another process sharing the work folder waits).

    With ``wait=False`` it does not wait: yields False when another process holds it.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _model_path(method: str, work: Path) -> Path:
    if method.startswith("sun"):
        return work / "models" / "sun.pt"
    if method.startswith("nnunet"):
        return work / "models" / ("nnunet-3d_fullres" if method == "nnunet-3d" else "nnunet-2d")
    if method == "classical":
        return work / "models" / "classical.json"
    raise InputError(f"method {method!r}: expected one of {', '.join(METHODS)}", field="methods")


def _trained_model(
    method: str,
    train: list[tuple[Path, Path]],
    work: Path,
    budget: Budget,
    methods: Sequence[str],
) -> tuple[Path, dict[str, Any]]:
    """The model ``method`` uses, trained here unless another method (or task) did.

    Returns the model and its training record (``seconds``, ``peak_rss_bytes``,
    ``gpu_memory_peak_bytes``, ``trained_by``).
    """
    from .metrics.resources import ResourceMeter

    model = _model_path(method, work)
    record_path = model.with_name(model.name + ".train.json")
    with _locked(model.with_name(model.name + ".lock")):
        if record_path.exists() and model.exists():
            return model, json.loads(record_path.read_text(encoding="utf-8"))
        with ResourceMeter(interval=0.2) as meter:
            _train(method, train, work, budget, methods)
        if meter.usage is None:  # set on leaving the block
            raise RuntimeError("resource meter did not record")
        record = {
            "trained_by": method,
            "seconds": round(meter.usage.wall_time_s, 2),
            "cpu_seconds": round(meter.usage.cpu_time_s, 2),
            "peak_rss_bytes": meter.usage.peak_rss_bytes,
            "gpu_memory_peak_bytes": meter.usage.gpu_memory_peak_bytes,
        }
        with atomic_path(record_path) as tmp:
            tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return model, record


def _train(
    method: str, train: list[tuple[Path, Path]], work: Path, budget: Budget, methods: Sequence[str]
) -> Path:
    """Train the model a method needs (the caller holds the model's lock)."""
    if method.startswith("sun"):
        model = work / "models" / "sun.pt"
        if not model.exists():
            from .sun.training import TrainingConfig, train_sun

            pairs = [_read(i) + (_read(lab)[0],) for i, lab in train]
            config = TrainingConfig(
                axes="9",
                depth=budget.sun_depth,
                base_width=budget.sun_width,
                input_size=budget.sun_input_size,
                steps=budget.sun_steps,
                val_every=max(1, budget.sun_steps // 5),
                checkpoint_every=max(1, budget.sun_steps // 5),
                device=None if budget.device == "auto" else budget.device,
            )
            model.parent.mkdir(parents=True, exist_ok=True)
            train_sun(
                [p[0] for p in pairs],
                [p[2] for p in pairs],
                model,
                config,
                voxel_size=pairs[0][1],
                sources=[str(i) for i, _ in train],
            )
        return model
    if method.startswith("nnunet"):
        from .nnunet.dataset import Case, export_dataset
        from .nnunet.paths import NnUNetPaths
        from .nnunet.run import plan_and_preprocess
        from .nnunet.run import train as nnunet_train

        configuration = "3d_fullres" if method == "nnunet-3d" else "2d"
        paths = NnUNetPaths(
            work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
        )
        model = work / "models" / f"nnunet-{configuration}"
        if model.exists():
            return model
        # Every nnU-Net configuration the comparison needs is planned and preprocessed
        # at once, under one lock: nnU-Net rewrites nnUNetPlans.json on each planning
        # run, which must not happen while another task's training reads it.
        needed = sorted(
            {"3d_fullres" if m == "nnunet-3d" else "2d" for m in methods if m.startswith("nnunet")}
            | {configuration}
        )
        with _locked(work / "models" / "nnunet-dataset.lock"):
            dataset = paths.raw
            if not any(dataset.glob(f"Dataset{budget.nnunet_dataset_id:03d}_*")):
                export_dataset(
                    [Case([i], lab) for i, lab in train],
                    paths,
                    budget.nnunet_dataset_id,
                    "Compare",
                    label_names=_class_names(train),
                )
            missing = [
                c
                for c in needed
                if not any(
                    paths.preprocessed.glob(
                        f"Dataset{budget.nnunet_dataset_id:03d}_*/nnUNetPlans_{c}"
                    )
                )
            ]
            if missing:
                plan_and_preprocess(
                    paths,
                    budget.nnunet_dataset_id,
                    missing,
                    threads=budget.threads,
                    log=work / "logs" / f"plan-{'-'.join(missing)}.log",
                )
        folder = nnunet_train(
            paths,
            budget.nnunet_dataset_id,
            configuration,
            "all",
            epochs=budget.nnunet_epochs,
            iterations=budget.nnunet_iterations,
            final_validation=budget.nnunet_final_validation,
            device=budget.device,
            threads=budget.threads,
            log=work / "logs" / f"train-{configuration}.log",
        )
        from .nnunet.model import import_model

        return import_model(folder, model)
    if method == "classical":
        from .classical.baselines import majority_order, segment

        model = work / "models" / "classical.json"
        if not model.exists():
            classes = len(_class_names(train))
            image, _ = _read(train[0][0])
            truth = _read(train[0][1])[0]
            raw = segment(image, "multi-otsu", classes=classes)
            order = majority_order(raw, truth, classes)
            model.parent.mkdir(parents=True, exist_ok=True)
            model.write_text(
                json.dumps({"method": "multi-otsu", "classes": classes, "order": order})
            )
        return model
    raise InputError(f"method {method!r}: expected one of {', '.join(METHODS)}", field="methods")


def _predict(method: str, model: Path, image: Path, out: Path, budget: Budget) -> None:
    from .io import Volume, read_volume, write_volume

    device = None if budget.device == "auto" else budget.device
    if method in ("sun-9", "sun-3", "nnunet-2d-9axes"):
        from .sun.inference import Outputs, predict_to_files

        predict_to_files(
            [image], model, Outputs(out), axes="3" if method == "sun-3" else "9", device=device
        )
    elif method in ("nnunet-2d", "nnunet-3d"):
        from .nnunet.predict import predict_files

        predict_files([image], model, out, device=device)
    else:
        from .classical.baselines import segment

        spec = json.loads(model.read_text())
        volume = read_volume(image, expect_ndim=3, grey=True)
        labels = segment(
            np.asarray(volume.data), "multi-otsu", spec["classes"], order=spec["order"]
        )
        write_volume(out, Volume(labels, volume.spacing))


def _predict_case(
    method: str,
    model: Path,
    index: int,
    pair: tuple[Path, Path],
    cases: Path,
    budget: Budget,
    score_volumes: Any,
    meter: Any,
) -> dict[str, Any]:
    """Predict and score held-out case ``index`` (the caller holds its lock), or read the
    record a finished run left for this model and image."""
    image, labels = pair
    target, record_path = cases / f"case_{index:03d}.tif", cases / f"case_{index:03d}.json"
    key = {"model": str(model), "model_mtime": model.stat().st_mtime, "image": str(image)}
    if record_path.exists() and target.exists():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if all(record.get(k) == v for k, v in key.items()):
            return record
    with meter(interval=0.2) as usage:
        started = time.perf_counter()
        _predict(method, model, image, target, budget)
        seconds = time.perf_counter() - started
    if usage.usage is None:  # set on leaving the block
        raise RuntimeError("resource meter did not record")
    pred, _ = _read(target)
    truth, spacing = _read(labels)
    rows = [
        {
            "method": method,
            "case": str(image),
            "label": int(row["label"]),
            "dice": row["dice"],
            "hd95": row["hd95"],
            "assd": row["assd"],
            "volume_ratio": (row["pred_voxels"] / row["gt_voxels"]) if row["gt_voxels"] else None,
        }
        for row in score_volumes(pred, truth, spacing=spacing).to_dict("records")
        if int(row["label"]) != 0
    ]
    record = {
        **key,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.usage.cpu_time_s, 2),
        "peak_rss_bytes": usage.usage.peak_rss_bytes,
        "gpu_memory_peak_bytes": usage.usage.gpu_memory_peak_bytes,
        "gpu_name": usage.usage.gpu_name,
        "gpu_utilisation_mean_percent": usage.usage.gpu_utilisation_mean_percent,
        "rows": rows,
    }
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=float), encoding="utf-8")
    return record


def run_method(
    method: str,
    train: Sequence[Sequence[str | Path]],
    test: Sequence[Sequence[str | Path]],
    out: str | Path,
    budget: Budget | None = None,
    model: str | Path | None = None,
    methods: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train (unless ``model`` is given), predict every test case and score one method.

    Writes ``OUT/predictions/<method>/<case>.tif`` and ``OUT/methods/<method>.json``.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    train, test : sequence of (image, labels)
    out : path
        The comparison folder (shared by every method).
    budget : Budget, optional
    model : path, optional
        A trained model to use instead of training.
    methods : sequence of str, optional
        Every method of the comparison (the nnU-Net configurations they need are
        planned together); default just ``method``.

    Examples
    --------
    >>> run_method("classical", [("a.tif", "a_gt.tif")], [("b.tif", "b_gt.tif")], "cmp")  # doctest: +SKIP
    """
    from .metrics.report import score_volumes
    from .metrics.resources import ResourceMeter

    if method not in METHODS:
        raise InputError(
            f"method {method!r}: expected one of {', '.join(METHODS)}", field="methods"
        )
    budget = budget or Budget()
    train_pairs, test_pairs = _pairs(train, "train"), _pairs(test, "test")
    out = Path(out)
    work = out / "work"
    if model:
        model_path, trained = Path(model), None
    else:
        model_path, trained = _trained_model(
            method, train_pairs, work, budget, list(methods or [method])
        )
    cases = out / "predictions" / method
    cases.mkdir(parents=True, exist_ok=True)
    # Each held-out case is predicted under its own lock and recorded in
    # case_NNN.json: processes running the same method on the same OUT share the cases
    # (one takes a case, the others go on to the next and read its record later), and
    # a rerun keeps the cases an interrupted run finished.
    records: dict[int, dict[str, Any]] = {}
    waiting = []
    for index, pair in enumerate(test_pairs):
        lock = cases / f"case_{index:03d}.lock"
        with _locked(lock, wait=False) as held:
            if held:
                records[index] = _predict_case(
                    method, model_path, index, pair, cases, budget, score_volumes, ResourceMeter
                )
            else:
                waiting.append(index)
    for index in waiting:  # another process has it: wait for its record
        with _locked(cases / f"case_{index:03d}.lock"):
            records[index] = _predict_case(
                method,
                model_path,
                index,
                test_pairs[index],
                cases,
                budget,
                score_volumes,
                ResourceMeter,
            )
    ordered = [records[i] for i in range(len(test_pairs))]
    rows = [row for record in ordered for row in record["rows"]]
    predict_seconds = sum(r["seconds"] for r in ordered)
    gpu = [r["gpu_memory_peak_bytes"] for r in ordered]
    if trained:
        gpu.append(trained.get("gpu_memory_peak_bytes"))
    predict_peak = max(r["peak_rss_bytes"] for r in ordered)
    result = {
        "method": method,
        "model": str(model_path),
        "trained_by": trained["trained_by"] if trained else None,
        "budget": {k: v for k, v in budget.__dict__.items() if k != "extra"},
        "train_seconds": trained["seconds"] if trained else None,
        "train_cpu_seconds": trained.get("cpu_seconds") if trained else None,
        "predict_seconds": round(predict_seconds, 2),
        "predict_cpu_seconds": round(sum(r["cpu_seconds"] for r in ordered), 2),
        "predict_case_seconds": [r["seconds"] for r in ordered],
        "predict_case_cpu_seconds": [r["cpu_seconds"] for r in ordered],
        "peak_rss_bytes": max(predict_peak, trained["peak_rss_bytes"] if trained else 0),
        "train_peak_rss_bytes": trained["peak_rss_bytes"] if trained else None,
        "predict_peak_rss_bytes": predict_peak,
        "gpu_memory_peak_bytes": max((g for g in gpu if g), default=None),
        "gpu_name": next((r["gpu_name"] for r in ordered if r.get("gpu_name")), None),
        "gpu_utilisation_mean_percent": max(
            (
                r["gpu_utilisation_mean_percent"]
                for r in ordered
                if r.get("gpu_utilisation_mean_percent")
            ),
            default=None,
        ),
        "rows": rows,
    }
    with atomic_path(out / "methods" / f"{method}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
    return result


def merge(out: str | Path) -> dict[str, Path]:
    """Collect ``OUT/methods/*.json`` into ``comparison.json``, ``.csv`` and ``.png``.

    Returns
    -------
    dict
        ``json``, ``csv``, ``png`` paths.
    """
    import pandas as pd

    out = Path(out)
    results = [json.loads(p.read_text()) for p in sorted((out / "methods").glob("*.json"))]
    if not results:
        raise InputError(f"{out}: no method results (methods/*.json); run the methods first")
    rows = []
    for r in results:
        for row in r["rows"]:
            rows.append(
                {
                    **row,
                    "train_seconds": r["train_seconds"],
                    "train_cpu_seconds": r.get("train_cpu_seconds"),
                    "predict_seconds": r["predict_seconds"],
                    "predict_cpu_seconds": r.get("predict_cpu_seconds"),
                    "peak_rss_mib": r["peak_rss_bytes"] / 2**20,
                    "gpu_memory_peak_mib": (r["gpu_memory_peak_bytes"] or 0) / 2**20 or None,
                }
            )
    table = pd.DataFrame(rows)
    summary = (
        table.groupby(["method", "label"])[["dice", "hd95", "assd", "volume_ratio"]]
        .mean()
        .reset_index()
    )
    written = {}
    with atomic_path(out / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    written["csv"] = out / "comparison.csv"
    payload = {
        "methods": [{k: v for k, v in r.items() if k != "rows"} for r in results],
        "rows": table.to_dict("records"),
        "summary": summary.to_dict("records"),
    }
    with atomic_path(out / "comparison.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    written["json"] = out / "comparison.json"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot = summary.pivot(index="label", columns="method", values="dice")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    pivot.plot.bar(ax=ax)
    ax.set_ylabel("mean Dice")
    ax.set_xlabel("class")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(out / "comparison.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    written["png"] = out / "comparison.png"
    return written


def run_comparison(
    train: Sequence[Sequence[str | Path]],
    test: Sequence[Sequence[str | Path]],
    methods: Sequence[str],
    out: str | Path,
    budget: Budget | None = None,
    models: dict[str, str | Path] | None = None,
) -> dict[str, Path]:
    """Every method in turn, then :func:`merge`."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(
            f"methods {unknown}: expected some of {', '.join(METHODS)}", field="methods"
        )
    for method in methods:
        run_method(method, train, test, out, budget, (models or {}).get(method), methods)
    return merge(out)
