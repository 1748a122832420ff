"""Adapter between the pages and :mod:`unified_framework.hpc`: cluster state as pandas tables.

The pages never call SLURM themselves; everything goes through these functions, which
call the library (SLURM, or its local backend where SLURM is not installed) and return
tables with fixed columns (:data:`.joblist.QUEUE_COLUMNS`, :data:`.joblist.HISTORY_COLUMNS`,
:data:`PARTITION_COLUMNS`, :data:`NODE_COLUMNS`, :data:`DISK_COLUMNS`) or plain dicts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from unified_framework import hpc
from unified_framework.errors import MDLMAError
from unified_framework.hpc import slurm
from unified_framework.hpc.records import RECORDS_FOLDER

from .joblist import HISTORY_COLUMNS, QUEUE_COLUMNS, parse_duration

logger = logging.getLogger(__name__)

PARTITION_COLUMNS = (
    "partition",
    "default",
    "available",
    "time_limit",
    "nodes",
    "cpus_total",
    "cpus_idle",
    "gpus_total",
    "gpus_used",
    "memory_total_bytes",
    "memory_free_bytes",
)
NODE_COLUMNS = (
    "node",
    "state",
    "partitions",
    "cpus_total",
    "cpus_alloc",
    "cpus_idle",
    "gpus_total",
    "gpus_used",
    "memory_total_bytes",
    "memory_free_bytes",
)
DISK_COLUMNS = (
    "path",
    "total_bytes",
    "used_bytes",
    "free_bytes",
    "quota_used_bytes",
    "quota_limit_bytes",
)
#: Job ids of SLURM (``123``, ``123_4``) and of the library's local backend (``local-...``).
JOB_ID_RE = re.compile(r"\d+(_\d+)?|local-[0-9a-f]+\d*(_\d+)?")


def _table(records: list, columns) -> pd.DataFrame:
    """DataFrame of dataclass instances (``vars`` is much faster than ``asdict`` for thousands)."""
    return pd.DataFrame([vars(r) for r in records], columns=list(columns))


def queue(user: str | None = None) -> pd.DataFrame:
    """Jobs the scheduler knows (pending, running, just finished), array tasks one per row.

    Parameters
    ----------
    user : str, optional
        Only the current user's jobs when given; everyone's when None.
    """
    raw = _table(
        hpc.status(all_users=user is None),
        (
            "job_id",
            "name",
            "user",
            "state",
            "reason",
            "elapsed",
            "time_limit",
            "partition",
            "nodes",
            "cpus",
            "submit_time",
            "workdir",
        ),
    )
    table = pd.DataFrame(
        {
            "job_id": raw["job_id"],
            "name": raw["name"],
            "user": raw["user"],
            "state": raw["state"],
            "reason": raw["reason"].fillna(""),
            "elapsed_s": raw["elapsed"].map(parse_duration),
            "time_limit_s": raw["time_limit"].map(parse_duration),
            "partition": raw["partition"],
            "nodes": raw["nodes"].fillna(""),
            "cpus": raw["cpus"],
            "submit_time": raw["submit_time"],
            "workdir": raw["workdir"],
        }
    )
    if user is not None:
        table = table[table["user"] == user]
    return table.reindex(columns=list(QUEUE_COLUMNS))


def history(user: str, days: int = 7) -> pd.DataFrame:
    """The user's jobs of the last ``days`` days from accounting, newest first."""
    raw = _table(
        hpc.history(since=f"now-{int(days)}days"),
        (
            "job_id",
            "name",
            "user",
            "state",
            "exit_code",
            "partition",
            "nodes",
            "cpus",
            "elapsed_s",
            "total_cpu_s",
            "req_mem_mb",
            "max_rss_mb",
            "submit_time",
            "start_time",
            "end_time",
            "workdir",
        ),
    )
    raw = raw[raw["user"] == user]
    table = pd.DataFrame(
        {
            "job_id": raw["job_id"],
            "name": raw["name"],
            "user": raw["user"],
            "state": raw["state"],
            "exit_code": raw["exit_code"],
            "partition": raw["partition"],
            "nodes": raw["nodes"],
            "alloc_cpus": raw["cpus"],
            "elapsed_s": raw["elapsed_s"],
            "total_cpu_s": raw["total_cpu_s"],
            "req_mem_bytes": pd.to_numeric(raw["req_mem_mb"], errors="coerce") * 2**20,
            "max_rss_bytes": pd.to_numeric(raw["max_rss_mb"], errors="coerce") * 2**20,
            "submit_time": raw["submit_time"],
            "start_time": raw["start_time"],
            "end_time": raw["end_time"],
            "workdir": raw["workdir"],
        }
    )
    return table.iloc[::-1].reset_index(drop=True).reindex(columns=list(HISTORY_COLUMNS))


def cluster_state(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Partitions, nodes and disk space of ``paths`` (with the user's quotas where reported)."""
    found = hpc.resources([str(p) for p in paths])
    gpus_used = (
        slurm.gpus_in_use() if found.backend == "slurm" and any(n.gpus for n in found.nodes) else {}
    )
    nodes = pd.DataFrame(
        [
            {
                "node": n.name,
                "state": n.state,
                "partitions": ",".join(n.partitions),
                "cpus_total": n.cpus,
                "cpus_alloc": n.cpus_allocated,
                "cpus_idle": n.cpus_idle,
                "gpus_total": n.gpus,
                "gpus_used": gpus_used.get(n.name, 0),
                "memory_total_bytes": n.memory_mb * 2**20,
                "memory_free_bytes": (n.free_memory_mb or 0) * 2**20,
            }
            for n in found.nodes
        ],
        columns=list(NODE_COLUMNS),
    )
    rows = []
    for p in found.partitions:
        members = nodes[nodes["node"].isin(p.nodes)]
        rows.append(
            {
                "partition": p.name,
                "default": p.default,
                "available": "up" if p.available else "down",
                "time_limit": p.max_time,
                "nodes": len(p.nodes),
                "cpus_total": p.cpus,
                "cpus_idle": p.cpus_idle,
                "gpus_total": p.gpus,
                "gpus_used": int(members["gpus_used"].sum()),
                "memory_total_bytes": float(members["memory_total_bytes"].sum()),
                "memory_free_bytes": float(members["memory_free_bytes"].sum()),
            }
        )
    disks = _table(found.disks, DISK_COLUMNS)
    return pd.DataFrame(rows, columns=list(PARTITION_COLUMNS)), nodes, disks


def cancel(job_ids: list[str]) -> str | None:
    """Cancel jobs (one scheduler call); returns the error message, or None on success."""
    try:
        hpc.cancel([str(j) for j in job_ids])
    except MDLMAError as exc:
        return str(exc)
    return None


def job_info(job_id: str, user: str) -> dict | None:
    """Everything the viewer shows about one of ``user``'s jobs, or None if unknown.

    Returns
    -------
    dict or None
        ``job_id``, ``name``, ``user``, ``state``, ``partition``, ``nodes``,
        ``elapsed_s``, ``time_limit_s``, ``submit_time``, ``start_time``, ``end_time``,
        ``workdir``, ``stdout`` (path or None), ``record`` (the
        :class:`~unified_framework.hpc.JobRecord` of jobs the framework submitted, else
        None) and ``inputs`` (existing file paths among the record's parameters).
    """
    job_id = str(job_id).strip()
    if not JOB_ID_RE.fullmatch(job_id):
        return None
    # The controller's view is authoritative while it knows the job; accounting adds the
    # end time and outlives it (right after submission its line is still a placeholder).
    queued = [j for j in hpc.status([job_id]) if j.job_id == job_id and j.user == user]
    accounted = [
        r for r in hpc.history([job_id]) if r.job_id == job_id and r.user == user and r.workdir
    ]
    if not queued and not accounted:
        return None
    info = {"job_id": job_id, "user": user, "end_time": ""}
    if accounted:
        job = accounted[0]
        info.update(
            name=job.name,
            state=job.state,
            partition=job.partition,
            nodes=job.nodes or "",
            elapsed_s=job.elapsed_s,
            time_limit_s=parse_duration(job.time_limit),
            submit_time=job.submit_time or "",
            start_time=job.start_time or "",
            end_time=job.end_time or "",
            workdir=job.workdir,
        )
    if queued:
        job = queued[0]
        info.update(
            name=job.name,
            state=job.state,
            partition=job.partition,
            nodes=job.nodes or "",
            time_limit_s=parse_duration(job.time_limit),
            submit_time=job.submit_time or "",
            start_time=job.start_time or "",
            workdir=job.workdir,
        )
        if not accounted or job.state not in hpc.FINISHED_STATES:
            info["elapsed_s"] = parse_duration(job.elapsed)
        if job.state not in hpc.FINISHED_STATES:
            info["end_time"] = ""
    record = hpc.find_record(info["workdir"], job_id)
    stdout = hpc.job_log_path(job_id, info["workdir"], record)
    inputs = [
        str(v)
        for v in (record.params.values() if record else [])
        if isinstance(v, str) and v.startswith("/") and Path(v).is_file()
    ]
    info.update(stdout=str(stdout) if stdout else None, record=record, inputs=inputs)
    return info


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job id (``UNKNOWN`` when neither the queue nor accounting knows it)."""
    try:
        return {j.job_id: j.state for j in hpc.status(job_ids)}
    except MDLMAError as exc:
        logger.info("job states unknown: %s", exc)
        return {}


def recent_jobs(user: str, limit: int = 200) -> pd.DataFrame:
    """The user's latest jobs (queue first, then accounting): ``job_id``, ``name``, ``state``."""
    parts = []
    for source in (lambda: queue(user), lambda: history(user, days=30)):
        try:
            parts.append(source()[["job_id", "name", "state"]])
        except MDLMAError as exc:
            logger.info("job list incomplete: %s", exc)
    if not parts:
        return pd.DataFrame(columns=["job_id", "name", "state"])
    table = pd.concat(parts).drop_duplicates(subset="job_id", keep="first")
    return table.head(limit).reset_index(drop=True)


def recorded_workdirs(user: str) -> list[Path]:
    """Working directories of the user's recent jobs in which the framework keeps job records."""
    folders: list[str] = []
    sources: tuple[Callable[[], list[str]], ...] = (
        lambda: list(queue(user)["workdir"].dropna().unique()),
        lambda: hpc.workdirs(since="now-90days"),
    )
    for source in sources:
        try:
            folders += source()
        except MDLMAError as exc:
            logger.info("job folders incomplete: %s", exc)
    return [Path(f) for f in dict.fromkeys(folders) if f and (Path(f) / RECORDS_FOLDER).is_dir()]


def submit_script(script: Path, name: str, options: dict | None = None) -> str:
    """Submit a Python script with the ``python-script`` template, in the script's folder; returns the job id."""
    values = {
        "job_name": name,
        "workdir": str(script.parent),
        "script": str(script),
        **(options or {}),
    }
    return hpc.submit("python-script", values).job_ids[0]
