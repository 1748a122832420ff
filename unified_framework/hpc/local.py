"""The embedded backend: run rendered batch scripts as local subprocesses.

Used where no SLURM is installed (a laptop). A submission starts one detached runner
process (``python -m unified_framework.hpc.local RECORD``) that runs the record's jobs
in order — array tasks one after another, dependent jobs only after their
prerequisite completed — with the SLURM variables a script expects
(``SLURM_JOB_ID``, ``SLURM_ARRAY_TASK_ID``, ...), writing the same
``slurm-<id>.out`` logs into the record folder. States, exit codes, CPU time and peak
memory go to ``local-state.json`` there; ``<cache_dir>/local-jobs/<job id>`` points
from a job id to its record so that status, history and cancel work by id.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..utils.atomic import write_text_atomic
from .records import JobRecord, load_record
from .slurm import FINISHED_STATES, JobAccounting, JobStatus
from .validation import array_indices

STATE_FILE = "local-state.json"
_LOCK_FILE = ".local-state.lock"


def registry(cache_dir: str | os.PathLike) -> Path:
    """Folder mapping local job ids to record folders."""
    path = Path(cache_dir) / "local-jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked_state(record_dir: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write ``local-state.json`` under an exclusive lock."""
    with open(record_dir / _LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(record_dir)
        yield state
        write_text_atomic(record_dir / STATE_FILE, json.dumps(state, indent=1))


def read_state(record_dir: str | os.PathLike) -> dict[str, Any]:
    """The state file of a local record (``{"runner_pid": ..., "jobs": {id: {...}}}``)."""
    path = Path(record_dir) / STATE_FILE
    if not path.is_file():
        return {"runner_pid": None, "jobs": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def task_ids(job_id: str, array: str | None) -> list[str]:
    """Ids of the tasks of a job: itself, or ``<id>_<task>`` for every array task."""
    return [f"{job_id}_{i}" for i in array_indices(array)] if array else [job_id]


def submit(record: JobRecord, cache_dir: str | os.PathLike) -> None:
    """Give ids to the record's jobs, write their PENDING states and start the runner."""
    folder = Path(record.path)
    stamp = folder.name.rsplit("-", 1)[-1]
    state: dict[str, Any] = {"runner_pid": None, "jobs": {}}
    for number, job in enumerate(record.jobs):
        job.job_id = f"local-{stamp}{number}"
        for task in task_ids(job.job_id, job.array):
            state["jobs"][task] = {
                "step": job.step,
                "array_job_id": job.job_id,
                "array_task_id": task.rpartition("_")[2] if job.array else None,
                "name": record.params.get("job_name", record.template),
                "state": "PENDING",
                "reason": f"Dependency ({job.after})" if job.after else None,
                "submit": _now(),
            }
    write_text_atomic(folder / STATE_FILE, json.dumps(state, indent=1))
    reg = registry(cache_dir)
    for job in record.jobs:
        assert job.job_id is not None  # numbered above
        write_text_atomic(reg / job.job_id, str(folder))
    with open(folder / "local-runner.log", "ab") as runner_log:
        runner = subprocess.Popen(
            [sys.executable, "-m", __name__, str(folder)],
            cwd=record.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=runner_log,
            start_new_session=True,
        )
    with _locked_state(folder) as current:
        current["runner_pid"] = runner.pid


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _run_task(record: JobRecord, job_index: int, task: str, info: dict[str, Any]) -> None:
    folder = Path(record.path)
    job = record.jobs[job_index]
    log_name = (
        f"slurm-{job.job_id}_{info['array_task_id']}.out"
        if job.array
        else f"slurm-{job.job_id}.out"
    )
    env = dict(os.environ)
    env.update(
        SLURM_JOB_ID=task,
        SLURM_JOB_NAME=str(info["name"]),
        SLURM_SUBMIT_DIR=record.workdir,
        SLURM_JOB_NUM_NODES="1",
        SLURM_CPUS_ON_NODE=str(os.cpu_count() or 1),
        MDLMA_LOCAL_JOB="1",
    )
    if job.array:
        env.update(
            SLURM_ARRAY_JOB_ID=str(job.job_id), SLURM_ARRAY_TASK_ID=str(info["array_task_id"])
        )
    with open(folder / log_name, "ab") as log:
        proc = subprocess.Popen(
            ["bash", str(folder / job.script)],
            cwd=record.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        with _locked_state(folder) as state:
            entry = state["jobs"][task]
            if entry["state"] == "CANCELLED":  # cancelled while it was starting
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                entry.update(state="RUNNING", pid=proc.pid, start=_now(), reason=None)
        _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    with _locked_state(folder) as state:
        entry = state["jobs"][task]
        code = os.waitstatus_to_exitcode(status)
        entry.update(
            end=_now(),
            elapsed_s=round(elapsed, 3),
            exit_code=max(code, 0),
            signal=-code if code < 0 else 0,
            cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
            max_rss_mb=round(usage.ru_maxrss / 1024, 3),  # KiB on Linux
            pid=None,
        )
        if entry["state"] != "CANCELLED":
            entry["state"] = "COMPLETED" if code == 0 else "FAILED"


def run_record(record_dir: str | os.PathLike) -> None:
    """Run every job of a local record in order (the runner process)."""
    record = load_record(record_dir)
    folder = Path(record.path)
    finished: dict[str, bool] = {}
    for index, job in enumerate(record.jobs):
        assert job.job_id is not None  # submit() numbers every job before the runner starts
        tasks = task_ids(job.job_id, job.array)
        if job.after and not finished.get(job.after, False):
            with _locked_state(folder) as state:
                for task in tasks:
                    if state["jobs"][task]["state"] == "PENDING":
                        state["jobs"][task].update(
                            state="CANCELLED", reason="DependencyNeverSatisfied", end=_now()
                        )
            finished[job.step] = False
            continue
        for task in tasks:
            info = read_state(folder)["jobs"][task]
            if info["state"] != "PENDING":
                continue
            _run_task(record, index, task, info)
        states = read_state(folder)["jobs"]
        finished[job.step] = all(states[t]["state"] == "COMPLETED" for t in tasks)


def _records_by_id(cache_dir: str | os.PathLike) -> dict[str, Path]:
    reg = registry(cache_dir)
    found = {}
    for entry in reg.iterdir():
        try:
            found[entry.name] = Path(entry.read_text(encoding="utf-8").strip())
        except OSError:
            continue
    return found


def _runner_alive(state: dict[str, Any]) -> bool:
    pid = state.get("runner_pid")
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished runner we started ourselves stays a zombie until reaped.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def _entries(
    cache_dir: str | os.PathLike,
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], Path]]:
    folders = sorted(set(_records_by_id(cache_dir).values()))
    for folder in folders:
        if not (folder / STATE_FILE).is_file():
            continue
        state = read_state(folder)
        alive = _runner_alive(state)
        for task, info in state["jobs"].items():
            if info["state"] in {"PENDING", "RUNNING"} and not alive and state.get("runner_pid"):
                info = {**info, "state": "FAILED", "reason": "local runner ended unexpectedly"}
            yield task, info, state, folder


def _clock(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def status(cache_dir: str | os.PathLike, user: str) -> list[JobStatus]:
    """States of the local jobs of this user (the registry is per user)."""
    jobs = []
    for task, info, _state, folder in _entries(cache_dir):
        running_for = None
        if info["state"] == "RUNNING" and info.get("start"):
            running_for = time.time() - time.mktime(
                time.strptime(info["start"], "%Y-%m-%dT%H:%M:%S")
            )
        jobs.append(
            JobStatus(
                job_id=task,
                array_job_id=info["array_job_id"],
                array_task_id=info.get("array_task_id"),
                name=info["name"],
                user=user,
                state=info["state"],
                reason=info.get("reason"),
                partition="local",
                elapsed=_clock(info.get("elapsed_s", running_for)),
                time_limit="UNLIMITED",
                submit_time=info.get("submit"),
                start_time=info.get("start"),
                nodes=os.uname().nodename if info["state"] != "PENDING" else None,
                cpus=os.cpu_count() or 1,
                workdir=str(folder.parent.parent),
            )
        )
    return jobs


def history(cache_dir: str | os.PathLike, user: str) -> list[JobAccounting]:
    """Accounting of the local jobs, like :func:`~.slurm.sacct` (array tasks one by one)."""
    records = []
    for task, info, _state, folder in _entries(cache_dir):
        records.append(
            JobAccounting(
                job_id=task,
                name=info["name"],
                user=user,
                partition="local",
                state=info["state"],
                exit_code=info.get("exit_code"),
                signal=info.get("signal"),
                elapsed_s=float(info.get("elapsed_s") or 0),
                time_limit=None,
                # The job may use every core; efficiency is measured against one.
                cpus=1,
                total_cpu_s=info.get("cpu_s"),
                req_mem_mb=None,
                max_rss_mb=info.get("max_rss_mb"),
                submit_time=info.get("submit"),
                start_time=info.get("start"),
                end_time=info.get("end"),
                nodes=os.uname().nodename,
                workdir=str(folder.parent.parent),
            )
        )
    return records


def cancel(cache_dir: str | os.PathLike, job_ids: Sequence[str]) -> None:
    """Cancel local jobs (whole arrays by their id, tasks as ``<id>_<task>``)."""
    by_id = _records_by_id(cache_dir)
    for job_id in job_ids:
        base = str(job_id).split("_")[0]
        folder = by_id.get(base)
        if folder is None or not (folder / STATE_FILE).is_file():
            raise InputError(f"job id {job_id!r}: no such local job")
        with _locked_state(folder) as state:
            for task, info in state["jobs"].items():
                if task != job_id and info["array_job_id"] != job_id:
                    continue
                if info["state"] in FINISHED_STATES:
                    continue
                if info["state"] == "RUNNING" and info.get("pid"):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(info["pid"], signal.SIGTERM)
                info.update(state="CANCELLED", reason="cancelled by user", end=_now())


if __name__ == "__main__":
    run_record(sys.argv[1])
