"""Simulated active learning: ground-truth labels answer the queries (an oracle).

One *cell* is an acquisition function and a seed: start with ``initial`` random slices,
then per round train a network from scratch on the labelled slices, score it on the
held-out volumes (Dice per class), and let the function pick the next ``batch`` slices,
until ``max_labelled`` slices are labelled. The cell ``full`` trains once on the whole
pool (the reference the curves are compared against). Each cell writes
``OUT/cells/<function>-seed<k>.json`` after every round (atomically), so a killed cell
resumes at its last finished round, and cells can run as SLURM array tasks.
:func:`merge` turns the cells into learning curves (mean ± sd over seeds, area under
the curve, the labelled share at which 95 % of the full-pool Dice is reached),
``OUT/curves.json`` and ``OUT/curves.png``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils.atomic import write_text_atomic
from .acquisition import FUNCTIONS, NEEDS_MODEL, check_function, score_pool, select
from .pool import SliceId, SlicePool
from .training import RoundConfig, evaluate, train_round

logger = logging.getLogger(__name__)

#: The reference cell: one model trained on every slice of the pool.
FULL = "full"


def cell_name(function: str, seed: int) -> str:
    """File stem of a cell (``entropy-seed0``)."""
    return f"{function}-seed{int(seed)}"


def cells(functions: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """All (function, seed) cells of a simulation including the ``full`` reference, in array order.

    Examples
    --------
    >>> cells(["random", "entropy"], [0, 1])[:3]
    [('full', 0), ('full', 1), ('random', 0)]
    """
    for f in functions:
        check_function(f)
    return [(FULL, int(s)) for s in seeds] + [(f, int(s)) for f in functions for s in seeds]


def _mean_foreground(dice: dict[str, float | None]) -> float:
    values = [v for v in list(dice.values())[1:] if v is not None]
    return float(np.mean(values)) if values else 0.0


def run_cell(
    images: Sequence[Any],
    labels: Sequence[Any],
    test_images: Sequence[Any],
    test_labels: Sequence[Any],
    class_names: Sequence[str],
    out: str | Path,
    function: str,
    seed: int,
    *,
    axes: str = "z",
    initial: int = 4,
    batch_size: int = 4,
    max_labelled: int = 32,
    config: RoundConfig | None = None,
    mc_samples: int = 8,
    device: Any = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one cell and return its record (also in ``out/cells/<cell>.json``).

    Parameters
    ----------
    images, labels : sequence of array-like
        The pool's volumes and their ground truth (the oracle).
    test_images, test_labels : sequence of array-like
        Held-out volumes (Dice is measured on their slices along the pool's first axis).
    class_names : sequence of str
    out : path-like
        The simulation folder.
    function : str
        An acquisition function or ``full``.
    seed : int
        Seeds the initial slices, the choices of random and the training.
    axes : str
        Pool axes.
    initial, batch_size, max_labelled : int
        Slices labelled at the start, per round, and at most.
    config : RoundConfig, optional
        Training settings (``seed`` is replaced by ``seed``).
    mc_samples : int
        Monte-Carlo dropout passes (BALD).
    device : str, optional
    progress : callable, optional
        Called with a line after each round.

    Raises
    ------
    InputError
        Mismatched shapes, a pool smaller than ``initial`` or the batch, a cell file of
        other settings.
    """
    from ..sun.inference.predictor import resolve_device

    if function != FULL:
        check_function(function)
    for n, (image, label) in enumerate(zip(images, labels)):
        if tuple(np.shape(image))[-3:] != tuple(np.shape(label)):
            raise InputError(
                f"pair {n}: image {tuple(np.shape(image))} and labels {tuple(np.shape(label))}; expected the same shape"
            )
    if len(images) != len(labels) or not len(images):
        raise InputError("simulate: expected as many label volumes as images, at least one")
    if len(test_images) != len(test_labels) or not len(test_images):
        raise InputError("simulate: expected held-out images with labels, at least one pair")
    config = RoundConfig(**{**asdict(config or RoundConfig()), "seed": int(seed)})
    device = resolve_device(device or config.device)
    classes = len(class_names)
    pool = SlicePool(images, axes=axes)
    settings = {
        "function": function,
        "seed": int(seed),
        "axes": ",".join(pool.axes),
        "initial": int(initial),
        "batch_size": int(batch_size),
        "max_labelled": int(min(max_labelled, len(pool))),
        "pool_size": len(pool),
        "config": asdict(config),
        "mc_samples": int(mc_samples),
        "class_names": list(class_names),
    }
    if min(initial, batch_size) < 1 or initial > len(pool):
        raise InputError(
            f"simulate: initial={initial}, batch={batch_size} for a pool of {len(pool)} slices; "
            "expected 1 <= initial <= pool size and batch >= 1"
        )
    out = Path(out)
    path = out / "cells" / f"{cell_name(function, seed)}.json"
    record: dict[str, Any] = {"settings": settings, "points": [], "labelled": [], "done": False}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = None
        if stored and stored.get("settings") != json.loads(json.dumps(settings)):
            raise InputError(
                f"{path}: a cell of other settings; use another output folder or remove it"
            )
        if stored:
            record = stored
    if record["done"]:
        return record
    rng = np.random.default_rng([int(seed), 7])
    if record.get("rng"):
        rng.bit_generator.state = record["rng"]
    elif function == FULL:
        record["labelled"] = [s.key for s in pool.ids]
    else:
        first = rng.choice(len(pool), int(initial), replace=False)
        record["labelled"] = [pool.ids[i].key for i in sorted(first)]
    scratch = out / "work" / cell_name(function, seed)
    scratch.mkdir(parents=True, exist_ok=True)
    while True:
        labelled = [SliceId.parse(k) for k in record["labelled"]]
        slices = [(pool.image(s), pool.label(labels[s.volume], s, classes)) for s in labelled]
        model_path = scratch / f"round-{len(record['points']):03d}.pt"
        model = train_round(slices, model_path, config, class_names=class_names)
        dice = evaluate(model, test_images, test_labels, axis=pool.axes[0], device=device)
        record["points"].append(
            {
                "labelled": len(labelled),
                "share": len(labelled) / len(pool),
                "dice": dice,
                "mean_dice": _mean_foreground(dice),
            }
        )
        if progress:
            progress(
                f"{cell_name(function, seed)}: {len(labelled)} slices, mean Dice {_mean_foreground(dice):.3f}"
            )
        step = min(int(batch_size), int(min(max_labelled, len(pool))) - len(labelled))
        if function == FULL or step < 1:
            record["done"] = True
        else:
            if function in NEEDS_MODEL:
                scores = score_pool(
                    model.network(device),
                    pool,
                    model.normalize,
                    mc_samples=mc_samples if function == "bald" else 0,
                    device=device,
                    divisor=model.divisor,
                )
            else:
                scores = None
            picked = select(function, pool.ids, labelled, step, rng, scores)
            record["labelled"] = [*record["labelled"], *[s.key for s in picked]]
        record["rng"] = rng.bit_generator.state
        model_path.unlink(missing_ok=True)
        write_text_atomic(path, json.dumps(record, indent=1, default=int))
        if record["done"]:
            return record


def _curve_stats(points_by_seed: list[list[dict]], key: Callable[[dict], float]) -> dict:
    length = min(len(p) for p in points_by_seed)
    values = np.array([[key(p) for p in pts[:length]] for pts in points_by_seed])
    return {
        "mean": values.mean(axis=0).tolist(),
        "sd": values.std(axis=0, ddof=1).tolist() if len(values) > 1 else [0.0] * length,
    }


def _shared_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A cell's settings without what differs between the cells of one simulation."""
    shared = {k: v for k, v in settings.items() if k not in ("function", "seed")}
    shared["config"] = {k: v for k, v in settings["config"].items() if k != "seed"}
    return shared


def _class_dice(name: str) -> Callable[[dict], float]:
    return lambda point: point["dice"].get(name) or 0.0


def _auc(share: np.ndarray, dice: np.ndarray) -> float:
    """Area under Dice vs labelled share, divided by the share range (a mean Dice)."""
    if len(share) < 2:
        return float(dice[0]) if len(dice) else math.nan
    return float(np.trapezoid(dice, share) / (share[-1] - share[0]))


def _share_at(share: np.ndarray, dice: np.ndarray, target: float) -> float | None:
    reached = np.flatnonzero(dice >= target)
    return float(share[reached[0]]) if reached.size else None


def merge(out: str | Path, plot: bool = True) -> dict[str, Any]:
    """Combine the cells in ``out/cells`` into learning curves; write ``curves.json`` (and ``curves.png``).

    Returns
    -------
    dict
        ``{"full": {...}, "functions": {name: {"labelled", "share", "mean_dice":
        {"mean", "sd"}, "dice": {class: {"mean", "sd"}}, "auc": {"mean", "sd",
        "per_seed"}, "share_at_95": {...}}}, "missing": [...], "seeds": [...]}``

    Raises
    ------
    InputError
        No finished cell, or cells of different settings.
    """
    out = Path(out)
    records = []
    for path in sorted((out / "cells").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except ValueError:
            raise InputError(f"{path}: not a readable cell record; run the cell again") from None
    finished = [r for r in records if r.get("done")]
    if not finished:
        raise InputError(f"{out}: no finished simulation cell; run mdlma al simulate first")
    missing = sorted(
        cell_name(r["settings"]["function"], r["settings"]["seed"])
        for r in records
        if not r.get("done")
    )
    common = _shared_settings(finished[0]["settings"])
    for r in finished[1:]:
        if _shared_settings(r["settings"]) != common:
            raise InputError(f"{out}: cells of different settings; merge each simulation apart")
    class_names = common["class_names"]
    by_function: dict[str, dict[int, list[dict]]] = {}
    for r in finished:
        by_function.setdefault(r["settings"]["function"], {})[r["settings"]["seed"]] = r["points"]
    full_by_seed = {s: pts[0]["mean_dice"] for s, pts in by_function.pop(FULL, {}).items()}
    full: dict[str, Any] | None = (
        {
            "mean_dice": float(np.mean(list(full_by_seed.values()))),
            "sd": float(np.std(list(full_by_seed.values()), ddof=1))
            if len(full_by_seed) > 1
            else 0.0,
            "per_seed": full_by_seed,
        }
        if full_by_seed
        else None
    )
    result: dict[str, Any] = {
        "settings": common,
        "full": full,
        "functions": {},
        "missing": missing,
        "seeds": sorted({r["settings"]["seed"] for r in finished}),
    }
    for function in [f for f in FUNCTIONS if f in by_function]:
        per_seed = by_function[function]
        series = list(per_seed.values())
        length = min(len(p) for p in series)
        share = np.array([p["share"] for p in series[0][:length]])
        aucs, reach = [], []
        for seed, points in per_seed.items():
            dice = np.array([p["mean_dice"] for p in points[:length]])
            aucs.append(_auc(share, dice))
            target = 0.95 * full_by_seed.get(seed, full["mean_dice"] if full else math.inf)
            reach.append(_share_at(share, dice, target))
        entry: dict[str, Any] = {
            "labelled": [p["labelled"] for p in series[0][:length]],
            "share": share.tolist(),
            "mean_dice": _curve_stats(series, lambda p: p["mean_dice"]),
            "dice": {c: _curve_stats(series, _class_dice(c)) for c in class_names},
            "auc": {
                "mean": float(np.mean(aucs)),
                "sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
                "per_seed": aucs,
            },
            "share_at_95": {
                "per_seed": reach,
                "reached_by_all": all(r is not None for r in reach),
                "mean": float(np.mean([r for r in reach if r is not None]))
                if all(r is not None for r in reach)
                else None,
            },
        }
        if full:
            mean_curve = np.array(entry["mean_dice"]["mean"])
            entry["share_at_95"]["mean_curve"] = _share_at(
                share, mean_curve, 0.95 * full["mean_dice"]
            )
        result["functions"][function] = entry
    write_text_atomic(out / "curves.json", json.dumps(result, indent=1))
    if plot:
        plot_curves(result, out / "curves.png")
    return result


def plot_curves(result: dict[str, Any], path: str | Path) -> Path:
    """Mean foreground Dice vs labelled share per function, ± sd bands; 95 % of full-pool Dice dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.atomic import atomic_path

    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for function, entry in result["functions"].items():
        share = np.array(entry["share"]) * 100
        mean = np.array(entry["mean_dice"]["mean"])
        sd = np.array(entry["mean_dice"]["sd"])
        (line,) = axis.plot(
            share, mean, marker="o", ms=3, label=f"{function} (AUC {entry['auc']['mean']:.3f})"
        )
        axis.fill_between(share, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    if result.get("full"):
        axis.axhline(
            0.95 * result["full"]["mean_dice"],
            color="k",
            ls="--",
            lw=1,
            label="95 % of full-pool Dice",
        )
    axis.set_xlabel("labelled slices (% of the pool)")
    axis.set_ylabel("held-out mean foreground Dice")
    seeds = len(result.get("seeds", []))
    axis.set_title(f"Active learning, mean ± sd over {seeds} seed(s)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return Path(path)
