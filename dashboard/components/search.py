"""Data logic of the Parameter search and Denoising pages: studies, landscape figures, before/after views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from unified_framework.search import load_pipeline, load_trials, open_study
from unified_framework.search.engine import STUDY_FILE
from unified_framework.search.landscape import landscape, trials_frame

MAX_DEPTH = 4
#: ``landscape.json`` caches of another version (2D embeddings before 2) are recomputed.
LANDSCAPE_VERSION = 2


def find_studies(root: Path) -> list[Path]:
    """Study folders (holding ``study.json``) up to :data:`MAX_DEPTH` levels below ``root``."""
    found = []
    for depth in range(MAX_DEPTH + 1):
        pattern = "/".join(["*"] * depth + [STUDY_FILE]) if depth else STUDY_FILE
        found += [p.parent for p in root.glob(pattern)]
    return sorted(set(found))


def load_study(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The study description and its finished trials."""
    return open_study(folder), load_trials(folder)


def log_params(info: dict[str, Any]) -> list[str]:
    """Names of the parameters searched on a log scale (shown on a log axis)."""
    pipeline = load_pipeline(info["pipeline"])
    return [name for name, space in pipeline.space.items() if space.log]


def landscape_figure(
    frame: pd.DataFrame, how: str, metric: str, params: list[str] | None = None
) -> go.Figure:
    """3D scatter of the parameters' 3D embedding (UMAP, PCA or the parameters), coloured by score.

    With ``how == "parameters"`` the axes are the (scaled) parameters ``params``.
    """
    hover = [c for c in frame.columns if c not in ("x", "y", "z", "state", "error")]
    figure = px.scatter_3d(
        frame,
        x="x",
        y="y",
        z="z",
        color="score",
        color_continuous_scale="Viridis",
        hover_data=hover,
        labels={"score": metric},
        title=f"score landscape ({how} of the parameters, 3D)",
    )
    figure.update_traces(marker={"size": 4})
    names = [f"{how} {i}" for i in (1, 2, 3)]
    if how == "parameters" and params:
        names = [f"{p} (scaled)" for p in params[:3]] + [""] * (3 - len(params[:3]))
    figure.update_layout(
        scene={"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]},
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        height=560,
    )
    return figure


def surface_figure(frame: pd.DataFrame, a: str, b: str, metric: str, log: list[str]) -> go.Figure:
    """The score over two chosen parameters (scatter coloured by score; a mesh when there are enough points)."""
    figure = go.Figure()
    numeric = all(pd.api.types.is_numeric_dtype(frame[c]) for c in (a, b))
    if numeric and len(frame) >= 4 and frame[a].nunique() > 1 and frame[b].nunique() > 1:
        figure.add_trace(
            go.Mesh3d(
                x=frame[a],
                y=frame[b],
                z=frame["score"],
                intensity=frame["score"],
                colorscale="Viridis",
                opacity=0.6,
                showscale=False,
            )
        )
    figure.add_trace(
        go.Scatter3d(
            x=frame[a],
            y=frame[b],
            z=frame["score"],
            mode="markers",
            marker={"size": 4, "color": frame["score"], "colorscale": "Viridis"},
            text=[f"trial {n}" for n in frame["number"]],
        )
    )
    scene: dict[str, Any] = {"xaxis_title": a, "yaxis_title": b, "zaxis_title": metric}
    if a in log:
        scene["xaxis"] = {"type": "log"}
    if b in log:
        scene["yaxis"] = {"type": "log"}
    figure.update_layout(
        scene=scene,
        title=f"{metric} over {a} and {b}",
        height=480,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    return figure


def parallel_figure(frame: pd.DataFrame, params: list[str], metric: str) -> go.Figure:
    """Parallel coordinates of the parameters and the score (choices as their index)."""
    shown = frame[params + ["score"]].copy()
    for c in params:
        if not pd.api.types.is_numeric_dtype(shown[c]) or pd.api.types.is_bool_dtype(shown[c]):
            shown[c] = pd.Categorical(shown[c].astype(str)).codes
    figure = px.parallel_coordinates(
        shown, color="score", color_continuous_scale="Viridis", title=f"parameters and {metric}"
    )
    figure.update_layout(height=380)
    return figure


def progress_of(info: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Done, failed, target and best score of a study."""
    complete = [t for t in trials if t["state"] == "complete"]
    return {
        "done": len(trials),
        "failed": len(trials) - len(complete),
        "target": int(info["trials"]),
        "best": max((t["score"] for t in complete), default=None),
    }


def best_table(trials: list[dict[str, Any]], count: int = 10) -> pd.DataFrame:
    """The best complete trials, best first, with their parameters and time."""
    frame = trials_frame([t for t in trials if t["state"] == "complete"])
    if frame.empty:
        return frame
    return frame.sort_values("score", ascending=False).head(count).drop(columns=["state", "error"])


def failed_table(trials: list[dict[str, Any]]) -> pd.DataFrame:
    """Failed trials with their parameters and error."""
    frame = trials_frame([t for t in trials if t["state"] == "failed"])
    return frame.drop(
        columns=["score", "wall_time_s", "cpu_time_s", "peak_rss_mb"], errors="ignore"
    )


def compute_landscape(folder: Path) -> tuple[pd.DataFrame, str]:
    """The landscape of a study, cached in ``landscape.json`` beside it for the trials it covers."""
    info, trials = load_study(folder)
    cache = folder / "landscape.json"
    numbers = [t["number"] for t in trials if t["state"] == "complete"]
    try:
        stored = json.loads(cache.read_text())
        if stored["numbers"] == numbers and stored.get("version") == LANDSCAPE_VERSION:
            return pd.DataFrame(stored["rows"]), stored["how"]
    except (OSError, ValueError, KeyError):
        pass
    frame, how = landscape(trials, log_params(info))
    try:
        from unified_framework.utils.atomic import write_text_atomic

        write_text_atomic(
            cache,
            json.dumps(
                {
                    "version": LANDSCAPE_VERSION,
                    "numbers": numbers,
                    "how": how,
                    "rows": json.loads(frame.to_json(orient="records")),
                }
            ),
        )
    except Exception:  # a read-only study folder: the landscape is simply computed again
        pass
    return frame, how


# --- Denoising: before/after -------------------------------------------------------------


def before_after(
    before: np.ndarray, after: np.ndarray, axis: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same slice of both volumes (along ``axis``) and their difference ``after - before``."""
    if before.shape != after.shape:
        raise ValueError(f"the volumes differ in shape: {before.shape} and {after.shape}")
    if before.ndim == 2:
        a, b = before, after
    else:
        a, b = np.take(before, index, axis=axis), np.take(after, index, axis=axis)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a, b, b - a


def line_profile(a: np.ndarray, b: np.ndarray, row: int) -> pd.DataFrame:
    """Grey values along one row of both slices (long format for a line chart)."""
    row = int(np.clip(row, 0, a.shape[0] - 1))
    positions = np.arange(a.shape[1])
    return pd.DataFrame(
        {
            "position": np.concatenate([positions, positions]),
            "value": np.concatenate([a[row], b[row]]),
            "volume": ["before"] * len(positions) + ["after"] * len(positions),
        }
    )


def to_display(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Grey values scaled to [0, 1] for ``st.image`` with a shared window."""
    span = (high - low) or 1.0
    return np.clip((image - low) / span, 0, 1)
