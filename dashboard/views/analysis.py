"""Degradation analysis: quantities table, thickness histogram, BV/TV curve, thickness map, comparisons."""

from pathlib import Path

import streamlit as st
from components import analysis, paths, ui, volume_view, volumes

st.title("Analysis")
root = ui.home()


@st.cache_data(ttl=30, show_spinner=False)
def reports_below(folder: str) -> list[tuple[Path, dict]]:
    return analysis.find_reports(Path(folder))


reports = reports_below(str(root))
with st.expander(
    "Analyse a phantom time series here (analytic degrading cylinder, 1 µm/day)",
    expanded=not reports,
):
    if st.button("Analyse", key="analysis_create"):
        with st.spinner("Making the phantom scans and quantifying them ..."):
            made = analysis.make_sample_analysis(root)
        reports_below.clear()
        st.session_state["analysis_reports"] = [str(made)]
        st.rerun()
st.caption(
    "Your own volumes: `mdlma quantify LABELS --out report.json` (or the `quantify` job template); "
    "its report appears here. See docs/analysis.md for every quantity."
)
if not reports:
    st.info(f"No analysis report (JSON from `mdlma quantify`) below {root} yet.")
    st.stop()

names = [str(p) for p, _ in reports]
chosen = st.multiselect(
    "Reports (several: compare samples or time points)",
    names,
    default=[names[0]],
    key="analysis_reports",
    format_func=lambda n: str(Path(n).relative_to(root)) if Path(n).is_relative_to(root) else n,
)
entries = []
for path, document in reports:
    if str(path) in chosen:
        entries += analysis.samples(path, document)
if not entries:
    st.info("Choose a report.")
    st.stop()

st.subheader("Quantities")
frame = analysis.table(entries)
st.dataframe(frame, hide_index=True, key="analysis_table")
for path, document in reports:
    if str(path) in chosen and document.get("kind") == "time-series":
        rates = {k: v for k, v in (document.get("rates_per_day") or {}).items() if v is not None}
        st.caption(
            f"{Path(path).name}: rates per day: "
            + ", ".join(
                f"{k} {rates[k]:.4g}"
                for k in ("residual_volume_mm3", "degradation_depth_um", "layer_volume_mm3")
                if k in rates
            )
        )

doubt = analysis.uncertainty_table(entries)
if not doubt.empty:
    st.subheader("Uncertainty")
    st.caption(
        "Range of each quantity with the uncertain voxels assigned each way and, with "
        "`--uncertainty sample`, over label maps drawn from the fused probabilities "
        "(mean and 2.5-97.5 %). Two samples differ beyond the segmentation's doubt when their ranges do not overlap."
    )
    st.dataframe(doubt, hide_index=True, key="analysis_uncertainty")
    quantities = list(dict.fromkeys(doubt["quantity"]))
    pick_q = st.selectbox(
        "Quantity",
        quantities,
        index=quantities.index("residual_volume_mm3") if "residual_volume_mm3" in quantities else 0,
        key="analysis_uncertainty_quantity",
    )
    st.plotly_chart(analysis.uncertainty_figure(doubt, pick_q), key="analysis_uncertainty_chart")

left, right = st.columns(2)
left.plotly_chart(analysis.histogram_figure(entries), key="analysis_histogram")
right.plotly_chart(analysis.bvtv_figure(entries), key="analysis_bvtv")

numeric = [c for c in frame.columns if c not in ("sample", "day") and frame[c].dtype.kind in "fi"]
if len(frame) > 1 and numeric:
    st.subheader("Across samples and time points")
    quantity = st.selectbox(
        "Quantity",
        numeric,
        index=numeric.index("residual_volume_mm3") if "residual_volume_mm3" in numeric else 0,
        key="analysis_quantity",
    )
    st.plotly_chart(analysis.trend_figure(frame, quantity), key="analysis_trend")

with_maps = [e for e in entries if (e.get("maps") or {}).get("thickness")]
st.subheader("Thickness map")
if not with_maps:
    st.caption("No thickness map in these reports (`mdlma quantify ... --maps DIR` writes them).")
    st.stop()
sample_names = [f"{e['name']} ({Path(e['report']).name})" for e in with_maps]
pick = st.selectbox("Sample", sample_names, key="analysis_map_sample")
entry = with_maps[sample_names.index(pick)]
kept = paths.allowed([Path(entry["maps"]["thickness"])], ui.job_roots())
if not kept or not kept[0].exists():
    st.warning("The thickness map is missing (or outside your job folders).")
    st.stop()
try:
    thickness = volume_view.load(kept[0])
except Exception as exc:  # unreadable or vanished files: one line, no traceback
    ui.show_error(exc)
    st.stop()
axis, index = volume_view.slice_controls(tuple(thickness.shape), "analysis")
values = volumes.orthogonal_slice(thickness.data, axis, index)
st.plotly_chart(
    volumes.heatmap_figure(
        values,
        f"local thickness (µm), {volumes.AXES[axis]} = {index}",
        volumes.slice_aspect(thickness.spacing, axis),
        colorscale="Viridis",
    ),
    key="analysis_map",
)
