"""Job tables for the "My jobs" and "Resources" pages: filtering, formatting, efficiency.

Everything here works column-wise on pandas tables so that the pages stay fast with
thousands of jobs. The queue table has the columns of :data:`QUEUE_COLUMNS`, the
history table those of :data:`HISTORY_COLUMNS` (see :mod:`.cluster`, which builds both
from the SLURM library).
"""

from __future__ import annotations

import math

import pandas as pd

from unified_framework.errors import InputError
from unified_framework.hpc import slurm

QUEUE_COLUMNS = (
    "job_id",
    "name",
    "user",
    "state",
    "reason",
    "elapsed_s",
    "time_limit_s",
    "partition",
    "nodes",
    "cpus",
    "submit_time",
    "workdir",
)
HISTORY_COLUMNS = (
    "job_id",
    "name",
    "user",
    "state",
    "exit_code",
    "partition",
    "nodes",
    "alloc_cpus",
    "elapsed_s",
    "total_cpu_s",
    "req_mem_bytes",
    "max_rss_bytes",
    "submit_time",
    "start_time",
    "end_time",
    "workdir",
)
#: States in which a job still holds or waits for resources.
ACTIVE_STATES = (
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
)
#: States whose job can still be cancelled.
CANCELLABLE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "REQUEUED")


def parse_duration(text: str | None) -> float:
    """Seconds of a SLURM duration (``[D-][HH:]MM:SS``, ``MM:SS.mmm``); NaN if unknown.

    The library's parser (:func:`unified_framework.hpc.slurm.parse_duration`) with NaN
    for what a table cannot hold: ``UNLIMITED``, ``INVALID``, ``N/A`` and empty strings.
    A plain number is minutes (SLURM's ``--time`` convention).
    """
    try:
        seconds = slurm.parse_duration(None if text is None else str(text))
    except InputError:
        return float("nan")
    return float("nan") if seconds is None or math.isinf(seconds) else seconds


def parse_memory(text: str | None) -> float:
    """Bytes of a SLURM memory figure (``512M``, ``4G``, ``2000K``, ``4Gn``/``4Gc``); NaN if unknown."""
    if text is None:
        return float("nan")
    text = str(text).strip().upper().rstrip("NC")
    if not text:
        return float("nan")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 2**20  # SLURM's default unit is megabytes
    except ValueError:
        return float("nan")


def _duration_text(seconds: float) -> str:
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or unlimited
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (
        f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
        if days
        else f"{hours:02d}:{minutes:02d}:{secs:02d}"
    )


def format_duration(seconds):
    """``[D-]HH:MM:SS`` text of seconds (a number or a Series); empty for NaN."""
    if isinstance(seconds, pd.Series):
        values = pd.to_numeric(seconds, errors="coerce").astype(float)
        return pd.Series([_duration_text(v) for v in values], index=seconds.index, dtype=object)
    return _duration_text(float(seconds))


def filter_jobs(
    table: pd.DataFrame,
    states: list[str] | None = None,
    partitions: list[str] | None = None,
    search: str = "",
    user: str | None = None,
) -> pd.DataFrame:
    """Rows of a job table matching every given filter.

    Parameters
    ----------
    table : pandas.DataFrame
        Queue or history table.
    states, partitions : list of str, optional
        Keep these states / partitions (empty or None: all).
    search : str
        Case-insensitive text searched in job id, name, reason, node list and work
        directory (plain text, not a regular expression).
    user : str, optional
        Keep this user's jobs only.
    """
    keep = pd.Series(True, index=table.index)
    if user:
        keep &= table["user"] == user
    if states:
        keep &= table["state"].isin(states)
    if partitions:
        keep &= table["partition"].isin(partitions)
    search = search.strip().lower()
    if search:
        found = pd.Series(False, index=table.index)
        for column in ("job_id", "name", "reason", "nodes", "workdir"):
            if column in table.columns:
                found |= (
                    table[column]
                    .astype(str)
                    .str.lower()
                    .str.contains(search, regex=False, na=False)
                )
        keep &= found
    return table[keep]


def state_counts(table: pd.DataFrame) -> dict[str, int]:
    """Number of jobs per state, most frequent first."""
    return {str(k): int(v) for k, v in table["state"].value_counts().items()}


def queue_view(table: pd.DataFrame) -> pd.DataFrame:
    """The queue table as shown on the page (durations as text, fixed column order)."""
    view = pd.DataFrame(
        {
            "job": table["job_id"].astype(str),
            "name": table["name"],
            "state": table["state"],
            "reason": table["reason"],
            "elapsed": format_duration(table["elapsed_s"]),
            "limit": format_duration(table["time_limit_s"]),
            "partition": table["partition"],
            "nodes": table["nodes"],
            "user": table["user"],
        }
    )
    return view.reset_index(drop=True)


def with_efficiency(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``cpu_efficiency`` and ``memory_efficiency`` (percent) to a history table.

    CPU efficiency is used CPU time over ``elapsed x allocated CPUs`` (what ``seff``
    reports), at most 100: sacct's elapsed time is whole seconds, its CPU time is not.
    Memory efficiency is peak resident memory over the requested memory. Jobs without
    accounting data get NaN.
    """
    out = table.copy()
    core_time = pd.to_numeric(out["elapsed_s"], errors="coerce") * pd.to_numeric(
        out["alloc_cpus"], errors="coerce"
    )
    used = pd.to_numeric(out["total_cpu_s"], errors="coerce")
    out["cpu_efficiency"] = (100 * used / core_time.where(core_time > 0)).clip(upper=100).round(1)
    req = pd.to_numeric(out["req_mem_bytes"], errors="coerce")
    out["memory_efficiency"] = (
        100 * pd.to_numeric(out["max_rss_bytes"], errors="coerce") / req.where(req > 0)
    ).round(1)
    return out


def history_view(table: pd.DataFrame) -> pd.DataFrame:
    """The history table as shown on the page."""
    table = with_efficiency(table)
    return pd.DataFrame(
        {
            "job": table["job_id"].astype(str),
            "name": table["name"],
            "state": table["state"],
            "exit": table["exit_code"],
            "partition": table["partition"],
            "elapsed": format_duration(table["elapsed_s"]),
            "CPUs": table["alloc_cpus"],
            "CPU eff. %": table["cpu_efficiency"],
            "max RSS MiB": (pd.to_numeric(table["max_rss_bytes"], errors="coerce") / 2**20).round(
                1
            ),
            "mem. eff. %": table["memory_efficiency"],
            "end": table["end_time"],
        }
    ).reset_index(drop=True)


def timeline_figure(info: dict, now: pd.Timestamp | None = None):
    """Horizontal bars of a job's life: queued (submit to start) and running (start to end/now).

    ``info`` holds ``submit_time``, ``start_time`` and ``end_time`` as ISO text (empty or
    ``Unknown`` when not reached). Returns ``None`` when the submit time is unknown.
    """
    import plotly.graph_objects as go

    def stamp(text):
        value = pd.to_datetime(text, errors="coerce") if text else pd.NaT
        return None if pd.isna(value) else value

    submit, start, end = (stamp(info.get(k)) for k in ("submit_time", "start_time", "end_time"))
    if submit is None:
        return None
    now = now or pd.Timestamp.now()
    bars = [("queued", submit, start or now, "#f2b01e")]
    if start is not None:
        bars.append(("running" if end is None else "ran", start, end or now, "#2e86de"))
    figure = go.Figure()
    for name, begin, finish, colour in bars:
        figure.add_trace(
            go.Bar(
                x=[(finish - begin).total_seconds() * 1000],
                y=["job"],
                base=[begin],
                orientation="h",
                name=name,
                marker_color=colour,
                hovertext=f"{name}: {begin} to {finish}",
            )
        )
    figure.update_layout(
        barmode="overlay",
        height=140,
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_type="date",
        showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return figure
