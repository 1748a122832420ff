"""Run a hyper-parameter search over a pipeline: optuna samplers, dask executors, a resumable study folder.

A study folder holds ``study.json`` (the pipeline, data, sampler and target), optuna's
journal ``optuna.journal`` (the sampler's memory; ``optuna.db``, SQLite, in older folders) and ``trials/`` with one JSON piece
per finished trial, recorded in a :class:`~unified_framework.utils.workdir_manifest.Manifest`.
A trial counts as done only once its piece is committed; optuna is told afterwards. A
search killed at any moment resumes: trials whose piece is committed are told to optuna
from it (never run again), trials optuna still has as running without a piece are
marked failed and their parameters queued again.

Executors: ``inprocess`` (sequential, no dask), ``local`` (a dask ``LocalCluster`` of
``workers`` processes, the default) and ``slurm`` (dask-jobqueue ``SLURMCluster`` built
by :func:`unified_framework.hpc.dask_slurm_cluster`), or the address of a running dask
scheduler.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import InputError
from ..utils.atomic import write_text_atomic
from ..utils.workdir_manifest import Manifest, discard_if_invalid
from .pipeline import Pipeline, load_pipeline

logger = logging.getLogger(__name__)

STUDY_FILE = "study.json"
TRIALS_DIR = "trials"
SAMPLERS = ("random", "grid", "tpe")
EXECUTORS = ("inprocess", "local", "slurm")


@functools.lru_cache(maxsize=8)
def _read(path: str) -> np.ndarray:
    from ..io import read_volume

    return np.asarray(read_volume(path, grey=True).data)


def evaluate_trial(
    source: dict[str, Any],
    params: dict[str, Any],
    data: Sequence[Sequence[str]],
    surface: bool = False,
) -> dict[str, Any]:
    """Run the pipeline with ``params`` on every (image, truth) pair and score it.

    Intensity-ranked labels are mapped onto the truth's classes by majority vote
    (:func:`unified_framework.classical.majority_order`), as for every unsupervised
    method in the comparison tables. The score is the mean over images of the mean
    over the scored classes (``score.labels``, default every truth label but 0) of
    the pipeline's metric. Never raises: a failing trial returns ``state: failed``
    with its error in one line, and the search goes on.
    """
    from ..classical import majority_order, relabel
    from ..metrics import ResourceMeter, score_volumes

    result: dict[str, Any] = {"params": params, "state": "complete"}
    try:
        pipeline = load_pipeline(source)
        per_image = []
        rows_all = []
        # NVML is asked only where a GPU device exists (a trial may use one, e.g. a command step).
        with ResourceMeter(gpu=Path("/dev/nvidia0").exists()) as meter:
            for image_path, truth_path in data:
                image, truth = _read(str(image_path)), _read(str(truth_path))
                labels = pipeline.run(image, params)
                if labels.shape != truth.shape:
                    raise InputError(
                        f"{image_path}: the pipeline returned shape {labels.shape}, the truth has {truth.shape}"
                    )
                if not np.issubdtype(labels.dtype, np.integer):
                    raise InputError("the last step returned grey values, not labels")
                classes = int(labels.max()) + 1 if labels.size else 1
                order = majority_order(labels.astype(np.int64), truth.astype(np.int64), classes)
                mapped = relabel(labels.astype(np.int64), order)
                wanted = pipeline.labels or [int(v) for v in np.unique(truth) if v != 0]
                table = score_volumes(mapped, truth, labels=wanted, surface=surface)
                values = [
                    float(v)
                    for v in table[pipeline.metric]
                    if v is not None and math.isfinite(float(v))
                ]
                per_image.append(float(np.mean(values)) if values else 0.0)
                rows_all.append(
                    {
                        str(int(r["label"])): {
                            k: (
                                None
                                if r.get(k) is None
                                or (isinstance(r.get(k), float) and not math.isfinite(r[k]))
                                else float(r[k])
                            )
                            for k in ("dice", "iou", "f1", "hd95")
                            if k in r
                        }
                        for r in table.to_dict(orient="records")
                    }
                )
        result["score"] = float(np.mean(per_image))
        result["per_image"] = per_image
        result["per_class"] = rows_all
        result["resources"] = meter.usage.to_dict() if meter.usage else {}
    except Exception as exc:  # a trial may fail in any library; the search records it and goes on
        result["state"] = "failed"
        result["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        result["error_type"] = type(exc).__name__
    return result


def _sampler(name: str, pipeline: Pipeline, seed: int, grid_points: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    if name == "grid":
        return optuna.samplers.GridSampler(
            {k: s.grid(grid_points) for k, s in pipeline.space.items()}, seed=seed
        )
    raise InputError(
        f"sampler: expected one of {', '.join(SAMPLERS)}, got {name!r}", field="sampler"
    )


def _suggest(trial: Any, pipeline: Pipeline) -> dict[str, Any]:
    params = {}
    for key, space in pipeline.space.items():
        if space.choices is not None:
            params[key] = trial.suggest_categorical(key, list(space.choices))
        elif space.kind == "int":
            low, high = float(space.low or 0), float(space.high or 0)
            params[key] = trial.suggest_int(
                key, int(low), int(high), log=space.log, step=int(space.step or 1)
            )
        else:
            low, high = float(space.low or 0), float(space.high or 0)
            params[key] = trial.suggest_float(key, low, high, log=space.log, step=space.step)
    return params


def _check_data(data: Sequence[Sequence[str]]) -> list[list[str]]:
    pairs = []
    if not data:
        raise InputError(
            "data: give at least one image with its ground truth (--data IMAGE TRUTH)", field="data"
        )
    for pair in data:
        if len(pair) != 2 or not pair[1]:
            raise InputError(
                f"data: {pair[0] if pair else '?'} has no ground truth; expected IMAGE TRUTH pairs",
                field="data",
            )
        image, truth = (str(Path(p).resolve()) for p in pair)
        for p in (image, truth):
            if not Path(p).exists():
                raise InputError(f"{p}: no such file or folder", field="data")
        a, b = _read(image), _read(truth)
        if a.shape != b.shape:
            raise InputError(
                f"{truth}: ground truth shape {b.shape} differs from the image {a.shape}",
                field="data",
            )
        pairs.append([image, truth])
    return pairs


def open_study(folder: str | Path) -> dict[str, Any]:
    """The study description (``study.json``) of a study folder."""
    path = Path(folder) / STUDY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{folder}: not a search study folder (no {STUDY_FILE})") from None
    except ValueError as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None


def load_trials(folder: str | Path) -> list[dict[str, Any]]:
    """Every finished trial of a study (the committed pieces), in trial order."""
    manifest = Manifest(Path(folder) / TRIALS_DIR)
    if not manifest.load():
        return []
    out = []
    for name in sorted(manifest.records):
        try:
            out.append(json.loads(manifest.read(name)))
        except (InputError, ValueError):
            continue
    return sorted(out, key=lambda t: t["number"])


def _executor(executor: str, workers: int, slurm: dict[str, Any] | None):
    """A dask Client (and the cluster to close) for an executor name or scheduler address."""
    from distributed import Client, LocalCluster

    if executor == "local":
        # One thread per worker process (and dask's nanny sets OMP/MKL/OpenBLAS threads
        # to 1): n workers use n cores, the trials in parallel, not inside each other.
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        return Client(cluster), cluster
    if executor == "slurm":
        from ..hpc import dask_slurm_cluster

        options = {k: v for k, v in (slurm or {}).items() if v is not None}
        cluster = dask_slurm_cluster(workers=workers, **options)
        cluster.scale(jobs=workers)
        return Client(cluster), cluster
    return Client(executor), None  # the address of a running scheduler


def run_search(
    folder: str | Path,
    pipeline: str | Path | None = None,
    data: Sequence[Sequence[str]] | None = None,
    trials: int = 20,
    sampler: str = "random",
    executor: str = "local",
    workers: int = 1,
    seed: int = 0,
    grid_points: int = 5,
    surface: bool = False,
    slurm: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Start or resume a search in study folder ``folder`` until ``trials`` trials are done.

    Parameters
    ----------
    folder : path-like
        The study folder (created; an existing one is resumed, its pipeline, data and
        sampler kept).
    pipeline : path-like, optional
        Pipeline YAML (needed for a new study).
    data : sequence of (image, truth) paths, optional
        Training images with ground truth (needed for a new study).
    trials : int
        Trials to have done in total (a resume runs only the missing ones).
    sampler : {"random", "grid", "tpe"}
    executor : {"inprocess", "local", "slurm"} or str
        Where trials run; any other string is a dask scheduler address.
    workers : int
        Dask worker processes (SLURM jobs), i.e. trials in parallel.
    seed : int
        Sampler seed.
    grid_points : int
        Values per range in a grid search.
    surface : bool
        Also compute HD95 (slower).
    slurm : dict, optional
        Options of :func:`unified_framework.hpc.dask_slurm_cluster`.
    progress : callable, optional
        Called with each finished trial's record.
    stop_after : int, optional
        Return after this many new trials (tests: a search interrupted midway).

    Returns
    -------
    dict
        ``done``, ``failed``, ``new``, ``best`` (the best trial record), and of this
        run: ``wall_time_s`` (all of it), ``startup_s`` (opening the study, starting
        the workers and loading the images on them), ``trials_per_s`` (trials over
        the time after the start-up, until the last trial was recorded) and
        ``driver_cpu_s`` (CPU seconds this process spent meanwhile: sampler, SQLite,
        dask's client and, for a local cluster, its scheduler).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(folder)
    discard_if_invalid(folder)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise InputError(f"trials: expected a positive number, got {trials!r}", field="trials")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096:
        raise InputError(f"workers: expected 1 to 4096, got {workers!r}", field="workers")
    if (folder / STUDY_FILE).exists():
        study_info = open_study(folder)
        study_info["trials"] = trials
    else:
        if pipeline is None or data is None:
            raise InputError(f"{folder}: a new study needs a pipeline and --data IMAGE TRUTH pairs")
        if sampler not in SAMPLERS:
            raise InputError(
                f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}", field="sampler"
            )
        loaded = load_pipeline(pipeline)
        if not loaded.space:
            raise InputError(
                f"{pipeline}: no parameter has a search space (choices or low/high); nothing to search"
            )
        study_info = {
            "pipeline": loaded.source,
            "pipeline_file": str(pipeline),
            "data": _check_data(data),
            "sampler": sampler,
            "seed": seed,
            "grid_points": grid_points,
            "surface": surface,
            "trials": trials,
            "metric": loaded.metric,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        folder.mkdir(parents=True, exist_ok=True)
    run_lock = _claim_study(folder)
    try:
        return _search(folder, study_info, executor, workers, slurm, progress, stop_after)
    finally:
        run_lock.close()


def _search(
    folder: Path,
    study_info: dict[str, Any],
    executor: str,
    workers: int,
    slurm: dict[str, Any] | None,
    progress: Callable[[dict[str, Any]], None] | None,
    stop_after: int | None,
) -> dict[str, Any]:
    """:func:`run_search` once the study's settings are checked and its folder is held."""
    import optuna

    write_text_atomic(folder / STUDY_FILE, json.dumps(study_info, indent=2) + "\n")
    loaded = load_pipeline(study_info["pipeline"])
    study = optuna.create_study(
        study_name="search",
        storage=_storage(folder),
        direction="maximize",
        sampler=_sampler(
            study_info["sampler"], loaded, int(study_info["seed"]), int(study_info["grid_points"])
        ),
        load_if_exists=True,
    )
    if study.trials:
        # A resumed sampler seeded as before would draw the same parameters again.
        study.sampler = _sampler(
            study_info["sampler"],
            loaded,
            int(study_info["seed"]) + len(study.trials),
            int(study_info["grid_points"]),
        )
    manifest = Manifest(folder / TRIALS_DIR)
    manifest.load()
    bad = manifest.verify().bad
    if bad:
        logger.warning("%s: %d damaged trial records; those trials run again", folder, len(bad))
        manifest.forget(bad)
        manifest.commit()
    recorded = {json.loads(manifest.read(n))["number"]: n for n in manifest.records}
    _recover(study, manifest, recorded)
    done = len(manifest.records)
    started = time.perf_counter()
    new = 0
    target = int(study_info["trials"])
    if study_info["sampler"] == "grid":
        size = math.prod(len(s.grid(int(study_info["grid_points"]))) for s in loaded.space.values())
        target = min(target, size)  # a grid is searched once
    limit = target - done if stop_after is None else min(target - done, stop_after)
    startup = elapsed_trials = driver_cpu = 0.0
    if limit > 0:
        if executor == "slurm":
            slurm = {"log_directory": str(folder / "slurm-logs"), **(slurm or {})}
        submit, close = _submitter(
            executor, workers, slurm, study_info["pipeline"], study_info["data"]
        )
        running, running_cpu = time.perf_counter(), time.process_time()
        startup = running - started
        try:
            in_flight: dict[Any, Any] = {}
            queued = 0
            # Two tasks per worker: a worker starts its next trial at once while this
            # process records the last one.
            depth = workers if executor == "inprocess" else 2 * workers
            while new < limit:
                while len(in_flight) < depth and queued < limit:
                    trial = study.ask()
                    params = _suggest(trial, loaded)
                    future = submit(
                        study_info["pipeline"],
                        params,
                        study_info["data"],
                        bool(study_info["surface"]),
                    )
                    in_flight[future] = trial
                    queued += 1
                finished = _wait_any(list(in_flight))
                for future in finished:
                    trial = in_flight.pop(future)
                    result = future.result()
                    result["number"] = trial.number
                    _record(manifest, study, trial.number, result)
                    new += 1
                    if progress:
                        progress(result)
        finally:
            elapsed_trials = time.perf_counter() - running
            driver_cpu = time.process_time() - running_cpu
            close()
    elapsed = time.perf_counter() - started
    records = load_trials(folder)
    complete = [r for r in records if r["state"] == "complete"]
    return {
        "done": len(records),
        "failed": len(records) - len(complete),
        "new": new,
        "best": max(complete, key=lambda r: r["score"]) if complete else None,
        "wall_time_s": elapsed,
        "startup_s": startup,
        "driver_cpu_s": driver_cpu,
        "trials_per_s": new / elapsed_trials if elapsed_trials > 0 and new else 0.0,
    }


#: The lock a running search holds on its study folder (fcntl's: the kernel drops it when
#: the process dies, however it dies).
RUN_LOCK = ".run.lock"


def _claim_study(folder: Path) -> IO[str]:
    """Hold ``folder``'s run lock until the returned file is closed; refuse if a run holds it.

    Only the process holding it writes optuna's journal, so a journal lock file found then
    is one a killed run left behind: removed, rather than waited out (optuna breaks a lock
    only after it is 30 s old). Where the file system has no such locks (some NFS mounts),
    optuna's own lock alone guards the journal.
    """
    import fcntl

    handle = open(folder / RUN_LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(
            f"{folder}: another search run is using this study; wait for it to finish or stop it"
        ) from None
    except OSError as exc:
        logger.info("%s: no run lock (%s); optuna's journal lock guards the study", folder, exc)
        return handle
    (folder / (JOURNAL_FILE + ".lock")).unlink(missing_ok=True)
    return handle


#: optuna's journal (an append-only log) of a study folder: asking and telling cost about
#: 1 ms of this process's CPU per trial, against 18 ms with SQLite, which limited the
#: parallel efficiency of short trials.
JOURNAL_FILE = "optuna.journal"


def _storage(folder: Path) -> Any:
    """optuna's storage of ``folder``: its journal, or the SQLite file of an older study."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    legacy = folder / "optuna.db"
    if legacy.exists() and not (folder / JOURNAL_FILE).exists():
        return f"sqlite:///{legacy.resolve()}"
    return JournalStorage(JournalFileBackend(str(folder / JOURNAL_FILE)))


def _record(manifest: Manifest, study: Any, number: int, result: dict[str, Any]) -> None:
    import optuna

    name = f"trial-{number:06d}.json"
    manifest.write(name, json.dumps(result).encode())
    manifest.commit({"done": len(manifest.records)})
    if result["state"] == "complete":
        _tell(study, number, result["score"])
    else:
        _tell(study, number, state=optuna.trial.TrialState.FAIL)


def _tell(study: Any, number: int, value: float | None = None, state: Any = None) -> None:
    """``study.tell``; the grid sampler's 'grid exhausted' stop (meant for ``optimize``) is ignored.

    optuna stores the trial's state in a ``finally`` after the sampler's hook, so the
    value is kept when the hook raises.
    """
    try:
        if state is None:
            study.tell(number, value)
        else:
            study.tell(number, state=state)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def _recover(study: Any, manifest: Manifest, recorded: dict[int, str]) -> None:
    """Settle the trials a killed run left running in optuna's storage."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.number in recorded:
            result = json.loads(manifest.read(recorded[trial.number]))
            if result["state"] == "complete":
                _tell(study, trial.number, result["score"])
            else:
                _tell(study, trial.number, state=optuna.trial.TrialState.FAIL)
        else:
            _tell(study, trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


class _Done:
    """A finished in-process 'future'."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value

    def result(self) -> dict[str, Any]:
        return self.value


def _submitter(
    executor: str,
    workers: int,
    slurm: dict[str, Any] | None,
    pipeline: dict[str, Any] | None = None,
    data: Sequence[Sequence[str]] = (),
):
    if executor == "inprocess":
        return (lambda *a: _Done(evaluate_trial(*a))), (lambda: None)
    client, cluster = _executor(executor, workers, slurm)

    def submit(*args: Any) -> Any:
        return client.submit(evaluate_trial, *args, pure=False)

    def close() -> None:
        client.close()
        if cluster is not None:
            cluster.close()

    try:
        if executor == "local":
            client.wait_for_workers(workers)
        if pipeline is not None:
            from ._dask import Preload

            client.register_plugin(Preload(pipeline, data))
    except BaseException:
        close()
        raise
    return submit, close


def _wait_any(futures: list[Any]) -> list[Any]:
    if all(isinstance(f, _Done) for f in futures):
        return futures
    from distributed import wait

    return list(wait(futures, return_when="FIRST_COMPLETED").done)


def best_trials(folder: str | Path, count: int = 10) -> list[dict[str, Any]]:
    """The ``count`` best complete trials of a study, best first."""
    complete = [r for r in load_trials(folder) if r["state"] == "complete"]
    return sorted(complete, key=lambda r: -r["score"])[:count]


def export_best(folder: str | Path, out: str | Path) -> Path:
    """Write the pipeline with the best trial's parameters as constants (a YAML file to run elsewhere)."""
    import copy

    import yaml

    info = open_study(folder)
    best = best_trials(folder, 1)
    if not best:
        raise InputError(f"{folder}: no complete trial yet; nothing to export")
    source = copy.deepcopy(info["pipeline"])
    pipeline = load_pipeline(source)
    for item, step in zip(source["steps"], pipeline.steps, strict=True):
        for key in step.spaces:
            item.setdefault("params", {})[key] = best[0]["params"][f"{step.name}.{key}"]
    source["description"] = (
        f"best trial {best[0]['number']} of {folder} ({info['metric']} {best[0]['score']:.4f})"
    )
    return write_text_atomic(out, yaml.safe_dump(source, sort_keys=False))
