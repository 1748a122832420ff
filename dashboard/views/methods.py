"""Method comparison: the tables written by ``mdlma compare`` (SUN, nnU-Net, classical ...)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st
from components import paths, ui, volume_view, volumes

st.title("Method comparison")
st.caption(
    "Results of `mdlma compare --train ... --test ... --methods sun-9 sun-3 nnunet-2d nnunet-2d-9axes "
    "nnunet-3d classical --out FOLDER` (one table: every method on the same held-out data; docs/comparison.md)."
)
root = ui.home()


@st.cache_data(ttl=30, show_spinner=False)
def comparisons_below(folder: str) -> list[Path]:
    return paths.walk_files(
        Path(folder), lambda p: p.name == "comparison.json" and p.is_file(), max_depth=4
    )


found = comparisons_below(str(root))
if not found:
    st.info(f"No comparison.json below {root}; run `mdlma compare ... --out {root}/comparison`.")
    st.stop()
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
    st.stop()
columns = [
    c
    for c in ("method", "train_seconds", "predict_seconds", "peak_rss_bytes", "gpu_name")
    if c in methods
]
resources = methods[columns].copy()
if "peak_rss_bytes" in resources:
    resources["peak RSS MiB"] = (resources.pop("peak_rss_bytes") / 2**20).round(0)
st.subheader("Methods")
st.dataframe(resources, hide_index=True, key="methods_resources")
st.subheader("Scores (mean over held-out cases)")
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

st.subheader("Overlays")
rows = pd.DataFrame(payload["rows"])
cases = sorted(rows["case"].unique())
case = st.selectbox("Held-out case", cases, key="methods_case")
index_of_case = cases.index(case)
image_path = Path(case)
if not image_path.exists():
    st.warning(f"{image_path}: missing")
    st.stop()
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
    for column, (name, path) in zip(columns_, panels[start : start + 3]):
        if not path.exists():
            column.warning(f"{name}: {path.name} missing")
            continue
        labels = volumes.orthogonal_slice(volume_view.load(path).data, axis, index)
        rgb = volumes.overlay(grey, labels, 0.5, [int(v) for v in np.unique(labels)])
        column.plotly_chart(
            volumes.image_figure(rgb, name, aspect, height=320), key=f"methods_overlay_{name}"
        )
