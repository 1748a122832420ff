"""Streamlit pieces shared by the pages: settings, cached cluster queries, links, errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from unified_framework import hpc
from unified_framework.config import load_config
from unified_framework.errors import MDLMAError

from . import cluster

#: Seconds cluster queries (squeue, sinfo, sacct) are cached for; pages refresh on this timer.
REFRESH_S = 10


def settings() -> dict:
    """The user's configuration (read on every run: it is a small TOML file)."""
    return load_config()


def current_user() -> str:
    """Login name of the user the dashboard runs as (it acts on their jobs only)."""
    return hpc.current_user()


def home() -> Path:
    """The user's MDLMA home (``MDLMA_HOME``), created if missing."""
    path = Path(settings()["home"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def cached_queue(user: str | None):
    return cluster.queue(user)


@st.cache_data(ttl=60, show_spinner=False)
def cached_history(user: str, days: int):
    return cluster.history(user, days)


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def cached_cluster_state(paths: tuple[str, ...]):
    """(partitions, nodes, disks) tables, see :func:`cluster.cluster_state`."""
    return cluster.cluster_state([Path(p) for p in paths])


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def cached_recent_jobs(user: str):
    return cluster.recent_jobs(user)


@st.cache_data(ttl=60, show_spinner=False)
def cached_recorded_workdirs(user: str) -> list[Path]:
    return cluster.recorded_workdirs(user)


def clear_cluster_cache() -> None:
    """Forget cached cluster state (after submitting or cancelling)."""
    for function in (
        cached_queue,
        cached_history,
        cached_cluster_state,
        cached_recent_jobs,
        cached_recorded_workdirs,
    ):
        function.clear()


def job_roots() -> list[Path]:
    """Folders the viewer may read: MDLMA_HOME and the work directories of recorded jobs."""
    return list(
        dict.fromkeys(
            [home().resolve(), *(p.resolve() for p in cached_recorded_workdirs(current_user()))]
        )
    )


def show_error(exc: BaseException, where=None) -> None:
    """Show a framework error as a one-line message (no traceback for the user's mistakes)."""
    target = where or st
    if isinstance(exc, MDLMAError):
        target.error(str(exc), icon=":material/error:")
    else:
        target.exception(exc)


def viewer_link(job_id: str, label: str | None = None, where=None) -> None:
    """A link to the job viewer showing ``job_id`` (relative, so any URL prefix works)."""
    (where or st).page_link(
        "views/viewer.py",
        label=label or f"Open job {job_id} in the viewer",
        icon=":material/monitoring:",
        query_params={"job": str(job_id)},
    )


def file_mtime(path: str | os.PathLike) -> float:
    """Modification time used as a cache key (0 when missing), so caches see rewrites."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def submit_button(
    label: str,
    template: Any,
    values: dict,
    cwd: Path,
    key: str,
    on_submitted: Callable[[], None] | None = None,
) -> None:
    """A primary button that submits ``template`` with ``values`` from ``cwd``; below it, on
    this and later runs, the submitted job ids and a link to the viewer.

    ``on_submitted`` runs after a submission (e.g. to clear the page's own caches); the
    cluster caches are cleared here. A framework error is shown in one line.
    """
    if st.button(label, type="primary", key=key):
        try:
            record = hpc.submit(template, values, cwd=str(cwd))
        except MDLMAError as exc:
            show_error(exc)
        else:
            clear_cluster_cache()
            if on_submitted is not None:
                on_submitted()
            st.session_state[f"{key}_record"] = (record.job_ids, str(record.path))
    submitted = st.session_state.get(f"{key}_record")
    if submitted:
        job_ids, record_path = submitted
        st.success(f"Submitted job {', '.join(job_ids)} (record {record_path}).")
        viewer_link(job_ids[0], label=f"Watch job {job_ids[0]} in the viewer")
