"""The 'Every method' view of the Segmentation comparison page: ``mdlma compare`` runs.

Submits the ``compare`` job template (one SLURM array task per method, then a merge)
and shows a finished comparison folder: the resource and score tables, a Dice bar chart
and per-method overlays on a held-out case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from components import paths, ui, volume_view, volumes
from unified_framework import hpc
from unified_framework.compare import METHODS
from unified_framework.errors import MDLMAError


@st.cache_data(ttl=30, show_spinner=False)
def comparisons_below(folder: str) -> list[Path]:
    """Every ``comparison.json`` up to four folders below ``folder``."""
    return paths.walk_files(
        Path(folder), lambda p: p.name == "comparison.json" and p.is_file(), max_depth=4
    )


def pairs_text(text: str) -> str:
    """'IMAGE LABELS' lines (or one line of pairs) as the template's space-separated list."""
    return " ".join(text.split())


def submit_form(root: Path) -> None:
    """Fill and submit the ``compare`` template."""
    st.caption(
        "One SLURM array task per method (methods sharing a model train it once), then a merge job "
        "writing the table. Paths relative to your MDLMA home; labels 0 .. n-1."
    )
    left, right = st.columns(2)
    train = left.text_area(
        "Training pairs (IMAGE LABELS per line)", key="methods_train", height=100
    )
    test = right.text_area("Held-out pairs (IMAGE LABELS per line)", key="methods_test", height=100)
    chosen = st.multiselect("Methods", list(METHODS), default=list(METHODS), key="methods_chosen")
    cols = st.columns(4)
    values = {
        "train_pairs": pairs_text(train),
        "test_pairs": pairs_text(test),
        "methods": " ".join(chosen),
        "out": cols[0].text_input("Output folder", "comparison", key="methods_out"),
        "sun_steps": cols[1].number_input(
            "SUN steps", 1, 10_000_000, 1500, key="methods_sun_steps"
        ),
        "nnunet_epochs": cols[2].number_input(
            "nnU-Net epochs", 1, 100_000, 100, key="methods_nnunet_epochs"
        ),
        "nnunet_iterations": cols[3].number_input(
            "nnU-Net iterations / epoch", 1, 100_000, 250, key="methods_nnunet_iterations"
        ),
    }
    cols = st.columns(4)
    values["cpus"] = cols[0].number_input("CPUs per method", 1, 128, 4, key="methods_cpus")
    values["mem"] = cols[1].text_input("Memory per method", "16G", key="methods_mem")
    values["time"] = cols[2].text_input("Time limit per method", "12:00:00", key="methods_time")
    values["gpus"] = cols[3].number_input("GPUs per method", 0, 8, 0, key="methods_gpus")
    if not (values["train_pairs"] and values["test_pairs"] and chosen):
        st.info("Give training and held-out pairs and at least one method.")
        return
    try:
        template = hpc.load_template("compare")
        values = {**template.defaults(), **values}
        prepared = hpc.prepare(template, values, cwd=str(root), check_cluster=False)
    except MDLMAError as exc:
        ui.show_error(exc)
        return
    with st.expander("Batch scripts"):
        for script in prepared.scripts:
            st.code(script.text, language="bash")
    ui.submit_button(
        "Submit the comparison",
        template,
        values,
        root,
        key="methods_submit",
        on_submitted=comparisons_below.clear,
    )


def results(root: Path) -> None:
    """Tables, bar chart and overlays of a finished comparison below ``root``."""
    found = comparisons_below(str(root))
    if not found:
        st.info(
            f"No comparison.json below {root}; submit one above or run "
            f"`mdlma compare ... --out {root}/comparison`."
        )
        return
    choice = st.selectbox(
        "Comparison",
        found,
        format_func=lambda p: str(p.parent.relative_to(root)),
        key="methods_comparison",
    )
    try:
        payload = json.loads(Path(choice).read_text(encoding="utf-8"))
        summary = pd.DataFrame(payload["summary"])
        methods = pd.DataFrame(payload["methods"])
    except (OSError, ValueError, KeyError) as exc:
        st.error(f"{choice}: not a comparison written by mdlma compare ({exc})")
        return
    columns = [
        c
        for c in ("method", "trained_by", "train_seconds", "predict_seconds", "peak_rss_bytes")
        if c in methods
    ]
    resources = methods[columns].copy()
    if "peak_rss_bytes" in resources:
        resources["peak RSS MiB"] = (resources.pop("peak_rss_bytes") / 2**20).round(0)
    if "gpu_memory_peak_bytes" in methods:
        resources["GPU MiB"] = (methods["gpu_memory_peak_bytes"].astype(float) / 2**20).round(0)
    if "gpu_name" in methods:
        resources["GPU"] = methods["gpu_name"]
    st.dataframe(resources, hide_index=True, key="methods_resources")
    st.markdown("**Scores** (mean over held-out cases; HD95 and ASSD in the volumes' units)")
    st.dataframe(summary.round(4), hide_index=True, key="methods_summary")
    figure = px.bar(
        summary.astype({"label": str}),
        x="label",
        y="dice",
        color="method",
        barmode="group",
        title="Dice per class",
        range_y=(0, 1),
    )
    st.plotly_chart(figure, key="methods_dice_plot")

    st.markdown("**Overlays**")
    rows = pd.DataFrame(payload["rows"])
    cases = sorted(rows["case"].unique())
    case = st.selectbox("Held-out case", cases, key="methods_case")
    index_of_case = cases.index(case)
    image_path = Path(case)
    if not image_path.is_absolute():  # relative to the folder the comparison ran in
        image_path = Path(choice).parent.parent / image_path
    if not image_path.exists():
        st.warning(f"{image_path}: missing")
        return
    image = volume_view.load(image_path)
    axis, index = volume_view.slice_controls(tuple(image.shape), "methods")
    window = volume_view.cached_window(str(image_path), ui.file_mtime(image_path))
    grey = volumes.to_grey(volumes.orthogonal_slice(image.data, axis, index), window)
    aspect = volumes.slice_aspect(image.spacing, axis) if image.ndim == 3 else 1.0
    folder = Path(choice).parent
    panels = [
        (m, folder / "predictions" / m / f"case_{index_of_case:03d}.tif") for m in methods["method"]
    ]
    for start in range(0, len(panels), 3):
        columns_ = st.columns(3)
        for column, (name, path) in zip(columns_, panels[start : start + 3], strict=False):
            if not path.exists():
                column.warning(f"{name}: {path.name} missing")
                continue
            labels = volumes.orthogonal_slice(volume_view.load(path).data, axis, index)
            rgb = volumes.overlay(grey, labels, 0.5, [int(v) for v in np.unique(labels)])
            column.plotly_chart(
                volumes.image_figure(rgb, name, aspect, height=320),
                key=f"methods_overlay_{name}",
            )


def render(root: Path) -> None:
    """The whole view: submit form, then results."""
    st.caption(
        "`mdlma compare --train ... --test ... --methods sun-9 sun-3 nnunet-2d nnunet-2d-9axes "
        "nnunet-3d classical --out FOLDER`: every method trained and scored on the same held-out "
        "data, one table (docs/comparison.md)."
    )
    with st.expander("Run a comparison on the cluster (compare template)"):
        submit_form(root)
    st.subheader("Results")
    results(root)
