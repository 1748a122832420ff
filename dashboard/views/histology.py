"""Virtual histology: a located section next to its virtual section, overlays and the score landscape."""

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st
from components import histology, ui

from unified_framework import hpc
from unified_framework.errors import MDLMAError
from unified_framework.registration import quality_rows

st.title("Virtual histology")
root = ui.home()


@st.cache_data(ttl=30, show_spinner=False)
def matches_below(folder: str) -> list[Path]:
    return histology.find_matches(Path(folder))


found = matches_below(str(root))
if not found:
    st.info(
        f"No match result below {root}. Run `mdlma histology match VOLUME SECTION --out DIR` there "
        "(or the histology-match job template); try it with `mdlma sample section`."
    )
    st.stop()

names = [str(f.relative_to(root)) for f in found]
chosen = st.selectbox("Match result", names, key="histology_match")
folder = found[names.index(chosen)]
try:
    report, virtual, section = histology.load_match(folder)
    registered = histology.load_registered(folder)
except Exception as exc:  # a damaged or half-copied result folder: say so, keep the page
    ui.show_error(exc)
    st.stop()

best = report["best"]
transform = best["section_to_plane"]
st.caption(
    f"tilt {best['tilt_deg']:.2f}° · azimuth {best['azimuth_deg']:.2f}° · offset {best['offset_um']:.2f} µm · "
    f"rotation {transform['rotation_deg']:.2f}° · scale {transform['scale']:.3f} · NMI {best['score_nmi']:.4f}"
)
left, right = st.columns(2)
left.image(virtual, caption="virtual section", clamp=True, width="stretch")
right.image(section, caption="section mapped onto it (stain darkness)", clamp=True, width="stretch")

st.subheader("Overlay")
if registered is not None and registered.shape == virtual.shape:
    after = st.toggle(
        "after the deformable registration",
        True,
        key="histology_registered",
        help=f"{report.get('registration', {}).get('method', '')}: the section warped onto its virtual section",
    )
    if after:
        section = registered
mode = st.radio("Overlay", ["blend", "checkerboard"], horizontal=True, key="histology_overlay")
if mode == "blend":
    alpha = st.slider("Section weight", 0.0, 1.0, 0.5, 0.05, key="histology_alpha")
    shown = histology.blend(virtual, section, alpha)
else:
    tiles = st.slider("Squares", 2, 32, 8, key="histology_tiles")
    shown = histology.checkerboard(virtual, section, tiles)
st.image(shown, clamp=True, width="stretch")

st.subheader("How sure is the match")
landscape = best.get("landscape", {})
if landscape:
    cols = st.columns(2)
    tilts = landscape["tilt_deg"]
    cols[0].plotly_chart(
        px.imshow(
            landscape["nmi_by_tilt"],
            x=tilts,
            y=tilts,
            labels={"x": "tilt about v (°)", "y": "tilt about u (°)", "color": "NMI"},
            title="score over tilts",
        ),
        width="stretch",
    )
    offsets = [o * landscape["voxel_um"] for o in landscape["offset_voxels"]]
    cols[1].plotly_chart(
        px.line(
            x=offsets,
            y=landscape["nmi_by_offset"],
            labels={"x": "offset (µm)", "y": "NMI"},
            title="score over offsets",
        ),
        width="stretch",
    )
rows = [{"rank": 1, **{k: best[k] for k in ("tilt_deg", "azimuth_deg", "offset_um", "score_nmi")}}]
rows += [
    {"rank": i, **{k: c[k] for k in ("tilt_deg", "azimuth_deg", "offset_um", "score_nmi")}}
    for i, c in enumerate(report.get("candidates", []), 2)
]
st.dataframe(pd.DataFrame(rows), hide_index=True)

if "registration" in report:
    quality = report["registration"]
    st.subheader(f"Deformable registration ({quality['method']}, {quality['seconds']:.1f} s)")
    st.dataframe(
        pd.DataFrame(quality_rows(quality), columns=["figure", "before", "after"]),
        hide_index=True,
        key="histology_quality",
    )

st.subheader("Where the section lies in the volume")
show_slices = st.toggle("orthoslices of the volume", False, key="histology_slices")
corners = histology.volume_box(report, folder, root)
slices = histology.binned_volume(report, folder, root) if show_slices else None
if show_slices and slices is None:
    st.caption("The volume is not readable from here; only its box is drawn.")
st.plotly_chart(histology.plane_figure(report, corners, slices), width="stretch")

labels = histology.load_labels(folder)
transfer = report.get("transfer", {})
if labels or transfer:
    st.subheader("Transferred labels")
    cols = st.columns(2)
    if "overlay" in labels:
        cols[0].image(
            labels["overlay"], caption="volume labels drawn on the section", width="stretch"
        )
    if "virtual" in labels and labels["virtual"].shape == virtual.shape:
        from unified_framework.histology.transfer import label_overlay

        cols[1].image(
            label_overlay(virtual * 255, labels["virtual"]),
            caption="volume labels on the virtual section",
            width="stretch",
        )
    points = transfer.get("section_labels", {}).get("per_label", {})
    if points:
        st.caption("Section annotations mapped into the volume (section_points.csv):")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "label": int(k),
                        "pixels": v["pixels"],
                        "inside volume": v["inside_volume"],
                        "centroid voxel (z, y, x)": str(v["centroid_voxel"]),
                    }
                    for k, v in points.items()
                ]
            ),
            hide_index=True,
            key="histology_points",
        )
else:
    st.caption(
        "No labels transferred: run the match with --volume-labels (a segmentation of the volume) and/or "
        "--section-labels (annotations of the section), or `mdlma histology transfer` on this folder."
    )

st.subheader("Search again, narrower")
st.caption(
    "Submits the histology-match template with a cone around the located normal "
    f"({best['tilt_deg']:.1f}° from z); the result appears next to this one."
)
cols = st.columns(4)
cone = cols[0].number_input("cone (°)", 1.0, 45.0, 8.0, 1.0, key="histology_rerun_cone")
step = cols[1].number_input("orientation step (°)", 0.5, 10.0, 2.0, 0.5, key="histology_rerun_step")
count = cols[2].number_input("candidates", 1, 20, 3, key="histology_rerun_candidates")
method = cols[3].selectbox(
    "registration", ["convexadam", "bspline", "none"], key="histology_rerun_register"
)
try:
    template = hpc.load_template("histology-match")
    values = {
        **template.defaults(),
        **histology.rerun_values(report, folder, root, cone, step, int(count), method),
    }
    prepared = hpc.prepare(template, values, cwd=str(root), check_cluster=False)
except MDLMAError as exc:
    ui.show_error(exc)
    prepared = None
if prepared is not None:
    with st.expander("Batch script"):
        st.code(prepared.scripts[0].text, language="bash")
    ui.submit_button(
        "Submit the narrower search", template, values, root, key="histology_rerun_submit"
    )
