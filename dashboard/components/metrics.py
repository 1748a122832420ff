"""Training metrics (JSON lines) to tables and plotly figures.

A training job appends one JSON object per line, e.g.
``{"step": 20, "loss": 0.41, "dice": {"1": 0.8, "2": 0.6}, "lr": 0.001}``. Nested
objects are flattened with dots (``dice.1``); the file may be read while it is being
written, so an incomplete last line is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

#: Columns that identify a row rather than measure something.
INDEX_COLUMNS = ("step", "epoch", "time", "timestamp", "split", "phase")
#: Columns whose name holds one of these select the split of curves.
SPLIT_COLUMNS = ("split", "phase")


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            flat.update({f"{name}.{i}": v for i, v in enumerate(value)})
        else:
            flat[name] = value
    return flat


def read_metrics(path: str | Path, max_bytes: int = 32 * 2**20) -> pd.DataFrame:
    """Read a JSON-lines metrics file into a flat table.

    Parameters
    ----------
    path : path-like
        The ``.jsonl`` file.
    max_bytes : int
        Read at most this many bytes from the end (older lines are dropped).

    Returns
    -------
    pandas.DataFrame
        One row per valid line; lines that are not JSON objects are skipped. Sorted by
        ``step`` when present.
    """
    path = Path(path)
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - max_bytes))
        raw = handle.read()
    lines = raw.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line is cut
    rows = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            rows.append(_flatten(record))
    table = pd.DataFrame(rows)
    if "step" in table.columns:
        table = table.sort_values("step", kind="stable").reset_index(drop=True)
    return table


def metric_groups(table: pd.DataFrame) -> dict[str, list[str]]:
    """Group the numeric columns into plots: ``loss``, ``dice`` and one per other metric."""
    groups: dict[str, list[str]] = {"loss": [], "dice": []}
    for column in table.columns:
        if column in INDEX_COLUMNS or not pd.api.types.is_numeric_dtype(table[column]):
            continue
        lower = column.lower()
        if "loss" in lower:
            groups["loss"].append(column)
        elif "dice" in lower:
            groups["dice"].append(column)
        else:
            groups.setdefault(column, []).append(column)
    return {name: columns for name, columns in groups.items() if columns}


def metric_figure(table: pd.DataFrame, columns: list[str], title: str) -> go.Figure:
    """Line plot of ``columns`` against ``step`` (or the row number), one line per split."""
    x_name = "step" if "step" in table.columns else ("epoch" if "epoch" in table.columns else None)
    split = next((c for c in SPLIT_COLUMNS if c in table.columns), None)
    parts = table.groupby(split, sort=True) if split else [(None, table)]
    figure = go.Figure()
    for part_name, part in parts:
        x = part[x_name] if x_name else part.index
        for column in columns:
            values = part[column]
            if values.notna().sum() == 0:
                continue
            label = column if part_name is None else f"{column} ({part_name})"
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=values,
                    mode="lines+markers" if len(part) < 50 else "lines",
                    name=label,
                    connectgaps=True,
                )
            )
    figure.update_layout(
        title=title,
        xaxis_title=x_name or "record",
        height=320,
        margin=dict(l=10, r=10, t=60, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return figure
