"""Submission records: what was submitted, kept next to the job's own files.

Every submission makes one folder in the working directory it runs in::

    WORKDIR/.mdlma-jobs/<YYYYmmdd-HHMMSS>-<template>-<6 hex>/
        params.json     validated parameters (what a resubmission uses)
        job.sh          the first batch script; later ones are <step>.sh (merge.sh ...)
        record.json     template, backend, user, host, times, job ids per step
        slurm-<jobid>.out / slurm-<arrayid>_<task>.out   the jobs' output
        local-state.json  (local backend only) states and exit codes of the jobs

``record.json`` is written last, atomically: a folder without it is a submission that
did not happen (it is removed on failure). Dashboards list records with
:func:`list_records` and read one with :func:`load_record`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

RECORDS_FOLDER = ".mdlma-jobs"
RECORD_VERSION = 1


@dataclass
class JobEntry:
    """One submitted batch job of a record."""

    step: str
    script: str
    job_id: str | None
    array: str | None = None
    after: str | None = None
    dependency: str | None = None
    log: str = "slurm-%j.out"


@dataclass
class JobRecord:
    """A submission as stored in ``record.json``."""

    template: str
    backend: str
    user: str
    host: str
    submitted: str
    workdir: str
    path: str
    jobs: list[JobEntry]
    hold: bool = False
    version: int = RECORD_VERSION
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def job_ids(self) -> list[str]:
        """Job ids in submission order (array jobs by their array id)."""
        return [job.job_id for job in self.jobs if job.job_id]

    def scripts(self) -> dict[str, str]:
        """The rendered scripts by file name."""
        return {
            job.script: (Path(self.path) / job.script).read_text(encoding="utf-8")
            for job in self.jobs
        }

    def log_files(self) -> list[Path]:
        """Output files written so far, sorted by name."""
        return sorted(Path(self.path).glob("slurm-*.out"))

    def log_path(self, job_id: str) -> Path | None:
        """The output file of ``job_id`` (``123`` or an array task ``123_4``), or None.

        The job's ``log`` pattern with SLURM's ``%A`` (array id), ``%a`` (task) and
        ``%j`` (job id) filled in; None when the job is not one of this record's.

        Examples
        --------
        >>> record = JobRecord("t", "slurm", "u", "h", "", "/w", "/w/.mdlma-jobs/r",
        ...                    [JobEntry("main", "job.sh", "7", log="slurm-%A_%a.out")])
        >>> str(record.log_path("7_3"))
        '/w/.mdlma-jobs/r/slurm-7_3.out'
        """
        base, _, task = job_id.partition("_")
        for entry in self.jobs:
            if entry.job_id in (job_id, base):
                name = entry.log.replace("%A", base).replace("%a", task).replace("%j", job_id)
                return Path(self.path) / name
        return None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("params")
        data["job_ids"] = self.job_ids
        return json.dumps(data, indent=2, ensure_ascii=False)


def new_record_dir(workdir: str | os.PathLike, template: str) -> Path:
    """Create and return a fresh, uniquely named record folder under ``workdir``."""
    root = Path(workdir) / RECORDS_FOLDER
    root.mkdir(mode=0o755, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = root / f"{stamp}-{template}-{secrets.token_hex(3)}"
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            continue
        return path
    raise InputError(f"{root}: could not make a new record folder")


def load_record(path: str | os.PathLike) -> JobRecord:
    """Read a record folder (or its ``record.json``).

    Raises
    ------
    InputError
        No ``record.json`` there, or it is not a record.
    """
    path = Path(path)
    folder = path.parent if path.name == "record.json" else path
    try:
        data = json.loads((folder / "record.json").read_text(encoding="utf-8"))
        params = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(
            f"{folder}: not a job record ({Path(exc.filename).name} missing)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{folder}: damaged job record ({exc})") from None
    try:
        jobs = [JobEntry(**job) for job in data.pop("jobs")]
        data.pop("job_ids", None)
        data["path"] = str(folder.resolve())
        return JobRecord(jobs=jobs, params=params, **data)
    except (TypeError, KeyError) as exc:
        raise InputError(f"{folder}: damaged job record ({exc})") from None


def list_records(
    root: str | os.PathLike, recursive: bool = False, max_depth: int = 4
) -> list[JobRecord]:
    """Records under ``root``, newest first.

    Parameters
    ----------
    root : path-like
        A working directory (its ``.mdlma-jobs`` folder is read), or with
        ``recursive`` a tree of them.
    recursive : bool
        Also look in subfolders, down to ``max_depth`` levels; hidden folders other
        than ``.mdlma-jobs`` are skipped.

    Damaged or half-made record folders are skipped.
    """
    root = Path(root)
    folders = []
    if recursive:
        base_depth = len(root.parts)
        for current, dirs, _files in os.walk(root):
            here = Path(current)
            if RECORDS_FOLDER in dirs:
                folders.append(here / RECORDS_FOLDER)
            dirs[:] = [
                d
                for d in dirs
                if not d.startswith(".") and len(here.parts) - base_depth < max_depth
            ]
    elif (root / RECORDS_FOLDER).is_dir():
        folders.append(root / RECORDS_FOLDER)
    records = []
    for folder in folders:
        for entry in folder.iterdir():
            if (entry / "record.json").is_file():
                try:
                    records.append(load_record(entry))
                except InputError:
                    continue
    return sorted(records, key=lambda r: (r.submitted, r.path), reverse=True)


def find_record(workdir: str | os.PathLike | None, job_id: str) -> JobRecord | None:
    """The submission record of ``job_id`` (or of its array) in ``workdir``, or None."""
    if not workdir or not (Path(workdir) / RECORDS_FOLDER).is_dir():
        return None
    base = str(job_id).split("_")[0]
    for record in list_records(workdir):
        if job_id in record.job_ids or base in record.job_ids:
            return record
    return None


def job_log_path(
    job_id: str, workdir: str | os.PathLike | None, record: JobRecord | None = None
) -> Path | None:
    """Where the output of ``job_id`` is: its record's log, else sbatch's default.

    Jobs the framework submitted write to their record folder (:meth:`JobRecord.log_path`;
    the record is looked up in ``workdir`` unless given); others to
    ``<workdir>/slurm-<job id>.out``, sbatch's default. None without either.

    Examples
    --------
    >>> str(job_log_path("42", "/nonexistent/folder"))
    '/nonexistent/folder/slurm-42.out'
    """
    record = record or find_record(workdir, job_id)
    path = record.log_path(job_id) if record else None
    if path is None and workdir:
        path = Path(workdir) / f"slurm-{job_id}.out"
    return path
