"""Degradation-analysis reports for the dashboard: find them, tabulate, plot, make a sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import paths

REPORT_FORMAT = "mdlma-analysis/1"
#: Columns shown first in the table (all others follow).
MAIN_COLUMNS = (
    "sample",
    "day",
    "residual_volume_mm3",
    "layer_volume_mm3",
    "degraded_fraction",
    "degradation_depth_um",
    "degradation_rate_um_per_day",
    "layer_thickness_mean_um",
    "layer_thickness_sd_um",
    "bic_percent",
    "bv_tv",
    "fragments",
)


def find_reports(folder: Path, limit: int = 100) -> list[tuple[Path, dict[str, Any]]]:
    """Analysis reports (``mdlma quantify`` JSON) below ``folder``, newest first; others skipped."""
    found = []
    for path in paths.walk_files(
        folder, lambda p: p.suffix == ".json" and p.is_file(), max_depth=5, limit=limit * 5
    ):
        try:
            if path.stat().st_size > 50_000_000:
                continue
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and document.get("format") == REPORT_FORMAT:
            found.append((path, document))
    found.sort(key=lambda item: -item[0].stat().st_mtime)
    return found[:limit]


def samples(report_path: Path, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The samples (time points) of a report, each with ``report`` (its file) added."""
    out = []
    for entry in document.get("samples", []) or []:
        out.append({**entry, "report": str(report_path)})
    if document.get("kind") == "compare":
        for name, result in (document.get("compare", {}).get("results") or {}).items():
            out.append({"name": name, **result, "report": str(report_path)})
    return out


def table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per sample: name, day and every scalar (main columns first)."""
    rows = []
    for entry in entries:
        row: dict[str, Any] = {"sample": entry.get("name", "?"), "day": entry.get("day")}
        row.update(entry.get("values", {}))
        for shell in entry.get("shells", []) or []:
            row[f"bv_tv_{shell['inner_um']:g}_{shell['outer_um']:g}um"] = shell.get("bv_tv")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if frame["day"].isna().all():
        frame = frame.drop(columns=["day"])
    first = [c for c in MAIN_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def histogram_figure(entries: list[dict[str, Any]]) -> go.Figure:
    """Degradation-layer thickness histograms (volume fraction per bin), one trace per sample."""
    figure = go.Figure()
    for entry in entries:
        hist = entry.get("thickness_histogram") or {}
        edges, fraction = hist.get("edges_um") or [], hist.get("fraction") or []
        if len(edges) < 2:
            continue
        centres = 0.5 * (np.asarray(edges[:-1]) + np.asarray(edges[1:]))
        figure.add_trace(go.Bar(x=centres, y=fraction, name=str(entry.get("name")), opacity=0.7))
    figure.update_layout(
        barmode="overlay",
        title="Degradation-layer thickness",
        xaxis_title="local thickness (µm)",
        yaxis_title="volume fraction",
        height=360,
        margin=dict(l=0, r=0, t=40, b=0),
    )
    return figure


def bvtv_figure(entries: list[dict[str, Any]]) -> go.Figure:
    """BV/TV against the distance from the implant surface (shell centres), one line per sample."""
    figure = go.Figure()
    for entry in entries:
        shells = entry.get("shells") or []
        if not shells:
            continue
        x = [0.5 * (s["inner_um"] + s["outer_um"]) for s in shells]
        y = [s.get("bv_tv") for s in shells]
        figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=str(entry.get("name"))))
    figure.update_layout(
        title="BV/TV around the implant",
        xaxis_title="distance from the implant surface (µm)",
        yaxis_title="BV/TV",
        height=360,
        margin=dict(l=0, r=0, t=40, b=0),
    )
    return figure


def uncertainty_table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Per sample and quantity: the value, its range with the uncertain voxels assigned each way
    and, where label maps were drawn from the probabilities, their mean and 2.5-97.5 % range."""
    rows = []
    for entry in entries:
        doubt = entry.get("uncertainty") or {}
        ranges = doubt.get("ranges") or {}
        sampling = doubt.get("sampling") or {}
        values = entry.get("values") or {}
        for key, (low, high) in ranges.items():
            if low is None and not sampling:
                continue
            row: dict[str, Any] = {
                "sample": entry.get("name", "?"),
                "quantity": key,
                "value": values.get(key),
                "assigned low": low,
                "assigned high": high,
            }
            if sampling:
                row["sampled mean"] = (sampling.get("mean") or {}).get(key)
                row["sampled 2.5 %"] = (sampling.get("low") or {}).get(key)
                row["sampled 97.5 %"] = (sampling.get("high") or {}).get(key)
            rows.append(row)
    return pd.DataFrame(rows)


def uncertainty_figure(frame: pd.DataFrame, quantity: str) -> go.Figure:
    """One quantity per sample: the value, the assigned-each-way range and the sampled range."""
    part = frame[frame["quantity"] == quantity]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=part["sample"],
            y=part["value"],
            mode="markers",
            name="segmentation, assigned each way",
            error_y=dict(
                type="data",
                symmetric=False,
                array=part["assigned high"] - part["value"],
                arrayminus=part["value"] - part["assigned low"],
            ),
        )
    )
    if "sampled mean" in part.columns and part["sampled mean"].notna().any():
        figure.add_trace(
            go.Scatter(
                x=part["sample"],
                y=part["sampled mean"],
                mode="markers",
                name="sampled mean, 2.5-97.5 %",
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=part["sampled 97.5 %"] - part["sampled mean"],
                    arrayminus=part["sampled mean"] - part["sampled 2.5 %"],
                ),
            )
        )
    figure.update_layout(
        title=f"{quantity} under the segmentation's uncertainty",
        height=340,
        margin=dict(l=0, r=0, t=40, b=0),
    )
    return figure


def trend_figure(frame: pd.DataFrame, quantity: str) -> go.Figure:
    """A quantity across samples (or over the days of a time series)."""
    x = frame["day"] if "day" in frame.columns and frame["day"].notna().all() else frame["sample"]
    figure = go.Figure(
        go.Scatter(x=x, y=frame[quantity], mode="lines+markers", text=frame["sample"])
    )
    figure.update_layout(
        title=quantity,
        xaxis_title="day" if x is not frame["sample"] else "sample",
        height=320,
        margin=dict(l=0, r=0, t=40, b=0),
    )
    return figure


def make_sample_analysis(root: Path, days: tuple[float, ...] = (0, 20, 40), side: int = 96) -> Path:
    """Analyse an analytic degrading-cylinder time series below ``root/analysis``; return the report."""
    from unified_framework.analysis.report import write_csv, write_json
    from unified_framework.analysis.timeseries import analyse_series
    from unified_framework.data.degrading import make_degrading_series
    from unified_framework.io import write_volume

    folder = root / "analysis" / f"degrading-{side}"
    folder.mkdir(parents=True, exist_ok=True)
    spacing = (5.0, 5.0, 5.0)
    series = make_degrading_series(
        list(days), 1.0, (12, side, side), spacing, motion=0, layer=20.0, shell_width=20.0
    )
    names = [f"day{int(d):03d}" for d in days]
    label_paths = []
    for name, (labels, _) in zip(names, series):
        path = folder / f"{name}_labels.tif"
        write_volume(path, labels, spacing=spacing)
        label_paths.append(path)
    r0 = series[0][1]["initial_radius_um"]
    result = analyse_series(
        [s[0] for s in series],
        spacing,
        list(days),
        registration="none",
        names=names,
        shells=3,
        shell_width=20.0,
        cylinder=True,
        initial_radius=r0,
        keep_maps=True,
    )
    document = {"kind": "time-series", **result.to_dict()}
    entries = []
    for name, path, day, res, (labels, _) in zip(
        names, label_paths, result.days, result.results, series
    ):
        thickness = folder / f"{name}_thickness.tif"
        write_volume(thickness, res.full_thickness_map(labels.shape), spacing=spacing)
        entries.append(
            {
                "name": name,
                "path": str(path),
                "day": day,
                **res.to_dict(),
                "maps": {"thickness": str(thickness)},
            }
        )
    document["samples"] = entries
    report = folder / "report.json"
    write_json(report, document)
    write_csv(
        folder / "report.csv", [{"sample": n, **row} for n, row in zip(names, result.table())]
    )
    return report
