"""Hyper-parameter search over whole pipelines (denoise -> segment -> clean up), scored against ground truth.

* :mod:`.pipeline` -- pipelines and search spaces as YAML files (:func:`load_pipeline`)
* :mod:`.engine` -- optuna samplers (random, grid, TPE), dask executors, resumable study folders
  (:func:`run_search`, :func:`load_trials`, :func:`best_trials`, :func:`export_best`)
* :mod:`.landscape` -- the score landscape (UMAP of the parameters) for the dashboard

See ``docs/search.md``.
"""

from .engine import (
    EXECUTORS,
    SAMPLERS,
    best_trials,
    evaluate_trial,
    export_best,
    load_trials,
    open_study,
    run_search,
)
from .pipeline import STEPS, Pipeline, Space, Step, load_pipeline, run_command

__all__ = [
    "EXECUTORS",
    "SAMPLERS",
    "STEPS",
    "Pipeline",
    "Space",
    "Step",
    "best_trials",
    "evaluate_trial",
    "export_best",
    "load_pipeline",
    "load_trials",
    "open_study",
    "run_command",
    "run_search",
]
