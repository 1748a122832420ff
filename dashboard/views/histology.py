"""Virtual histology: a located section next to its virtual section, overlays and the score landscape."""

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st
from components import histology, ui

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
try:
    report, virtual, section = histology.load_match(found[names.index(chosen)])
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
st.caption("The deformable registration and the label transfer come with the registration package.")
