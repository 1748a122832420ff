"""The steps of the human loop on a :class:`~.project.Project`: query, train, propose.

``mdlma al query | train`` and the dashboard's Annotate page call these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .acquisition import (
    NEEDS_MODEL,
    check_function,
    pixel_entropy,
    predict_slice,
    score_pool,
    select,
)
from .model import ALModel, load_al_model
from .pool import SliceId
from .project import Project
from .training import evaluate, train_round

logger = logging.getLogger(__name__)


def query(
    project: Project,
    *,
    function: str | None = None,
    batch_size: int | None = None,
    force: bool = False,
    device: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SliceId]:
    """Choose the next slices to label and record them as pending.

    Without a trained model (the first round) the choice is random. Pending queries
    not yet labelled are returned again unless ``force``.

    Parameters
    ----------
    project : Project
    function : str, optional
        Acquisition function (default: the project's).
    batch_size : int, optional
        Default: the project's.
    force : bool
        Query anew although slices are pending.
    device : str, optional
    progress : callable, optional
        (done, total) while the pool is scored.

    Returns
    -------
    list of SliceId

    Raises
    ------
    InputError
        Fewer unlabelled slices than the batch, bad function or batch size.
    """
    from ..sun.inference.predictor import resolve_device

    pending = project.pending
    if pending and not force:
        return pending
    function = check_function(function or project.state["function"])
    batch_size = int(batch_size or project.state["batch_size"])
    pool = project.pool
    labelled = project.labelled
    model_path = project.latest_model()
    rng = np.random.default_rng([len(project.rounds), len(labelled)])
    uncertainty = None
    if function not in NEEDS_MODEL or model_path is None:
        picked = select("random", pool.ids, labelled, batch_size, rng)
        used = "random"
    else:
        model = load_al_model(model_path)
        device = resolve_device(device)
        scores = score_pool(
            model.network(device),
            pool,
            model.normalize,
            mc_samples=int(project.state.get("mc_samples", 8)) if function == "bald" else 0,
            device=device,
            divisor=model.divisor,
            progress=progress,
        )
        picked = select(function, pool.ids, labelled, batch_size, rng, scores)
        used = function
        chosen = [pool.ids.index(s) for s in picked]
        uncertainty = {
            "pool_entropy": float(scores.entropy.mean()),
            "picked_entropy": float(scores.entropy[chosen].mean()),
        }
    project.record_query(picked, used, model_path, uncertainty)
    return picked


def train(
    project: Project,
    *,
    progress: bool = False,
    max_steps_this_run: int | None = None,
    device: str | None = None,
) -> Path:
    """Train the current round's model on every labelled slice (resumable) and record it.

    Returns
    -------
    pathlib.Path
        The model file.

    Raises
    ------
    InputError
        No labelled slice yet.
    """
    slices = project.training_slices()
    if not slices:
        raise InputError(
            f"{project.folder}: no labelled slices yet; label the queried slices first"
        )
    config = project.config
    if device:
        config.device = device
    model_path = project.next_model_path()
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model = train_round(
        slices,
        model_path,
        config,
        class_names=project.class_names,
        progress=progress,
        max_steps_this_run=max_steps_this_run,
    )
    dice = None
    held_out = project.state.get("held_out") or []
    if held_out:
        from .project import _open

        dice = evaluate(model, [_open(i) for i, _ in held_out], [_open(lab) for _, lab in held_out])
    project.record_model(model_path, len(slices), dice)
    return model_path


def propose(
    project: Project, sid: SliceId, model: ALModel | None = None, device: Any = "cpu"
) -> tuple[np.ndarray, np.ndarray] | None:
    """The latest model's labels and normalised entropy for one slice (None without a model).

    Returns
    -------
    (labels, entropy) : (numpy.ndarray of uint8, numpy.ndarray of float32), both ``(rows, cols)``
    """
    if model is None:
        path = project.latest_model()
        if path is None:
            return None
        model = load_al_model(path)
    probabilities = predict_slice(
        model.network(device), project.pool.image(sid), model.normalize, device, model.divisor
    )
    return probabilities.argmax(axis=0).astype(np.uint8), pixel_entropy(probabilities).astype(
        np.float32
    )
