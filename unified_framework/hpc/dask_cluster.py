"""Dask workers as SLURM jobs (dask-jobqueue ``SLURMCluster``): the one place that configures them.

Used by the parameter search (``mdlma search run --executor slurm``); each job runs one
dask worker with this installation's Python, so workers import the same framework.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import BackendUnavailable, InputError


def dask_slurm_cluster(
    workers: int = 1,
    cores: int = 1,
    memory: str = "2G",
    walltime: str = "01:00:00",
    partition: str | None = None,
    account: str | None = None,
    python: str | None = None,
    local_directory: str | None = None,
    log_directory: str | None = None,
    extra_directives: list[str] | None = None,
) -> Any:
    """A dask-jobqueue ``SLURMCluster`` of one single-threaded worker per job.

    Parameters
    ----------
    workers : int
        Jobs the caller will scale to (checked here; ``cluster.scale(jobs=workers)``).
    cores, memory, walltime, partition, account
        Per job, as for ``sbatch`` (``memory`` like ``2G``).
    python : str, optional
        Interpreter the workers run (default: this one, so they import this framework).
    local_directory : str, optional
        Workers' scratch folder.
    log_directory : str, optional
        Folder of the jobs' output files (default: SLURM's, the submitting folder).
    extra_directives : list of str, optional
        More ``#SBATCH`` options, e.g. ``["--qos=short"]``.

    Returns
    -------
    dask_jobqueue.SLURMCluster

    Raises
    ------
    BackendUnavailable
        Without ``sbatch`` or dask-jobqueue.
    InputError
        For bad resource values (one line naming the field).
    """
    import shutil

    if shutil.which("sbatch") is None:
        raise BackendUnavailable("SLURM is not available here (no sbatch); use --executor local")
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:  # pragma: no cover - a dependency
        raise BackendUnavailable("dask-jobqueue is not installed") from None
    from .slurm import parse_duration, parse_memory_mb

    if not 1 <= int(workers) <= 4096:
        raise InputError(f"workers: expected 1 to 4096 jobs, got {workers}", field="workers")
    if not 1 <= int(cores) <= 1024:
        raise InputError(f"cores: expected 1 to 1024, got {cores}", field="cores")
    if parse_memory_mb(str(memory)) is None or parse_duration(str(walltime)) is None:
        raise InputError(
            f"memory/walltime: expected e.g. 2G and 01:00:00, got {memory!r} and {walltime!r}"
        )
    return SLURMCluster(
        cores=int(cores),
        processes=1,
        memory=str(memory),
        walltime=str(walltime),
        queue=partition,
        account=account,
        python=python or sys.executable,
        local_directory=local_directory,
        log_directory=log_directory,
        scheduler_options={"dashboard_address": ":0"},
        job_extra_directives=list(extra_directives or []),
        worker_extra_args=["--nthreads", "1"],
        job_name="mdlma-search",
    )
