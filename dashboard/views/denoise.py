"""Denoising: a volume before and after a filter, side by side, their difference and a line profile."""

import numpy as np
import plotly.express as px
import streamlit as st
from components import search, ui

from unified_framework.io import read_volume

st.title("Denoising")
root = ui.home()
st.caption(
    "Compare a volume with its filtered version (`mdlma denoise METHOD IN --out OUT` or the denoise job "
    "template; the job viewer links here for those jobs). Paths are relative to your home folder or absolute."
)
for side in ("before", "after"):  # arriving from the job viewer's link of a denoise job
    if st.query_params.get(side) and f"denoise_{side}" not in st.session_state:
        st.session_state[f"denoise_{side}"] = st.query_params[side]
cols = st.columns(2)
before_path = cols[0].text_input("Before", key="denoise_before")
after_path = cols[1].text_input("After", key="denoise_after")
if not before_path or not after_path:
    st.info("Give the input volume and the filtered one.")
    st.stop()


@st.cache_data(ttl=60, show_spinner="Reading ...", max_entries=4)
def load(path: str) -> np.ndarray:
    return np.asarray(read_volume(path, grey=True).data, np.float32)


try:
    before = load(str(root / before_path))
    after = load(str(root / after_path))
    if before.shape != after.shape:
        raise ValueError(f"the volumes differ in shape: {before.shape} and {after.shape}")
except Exception as exc:
    ui.show_error(exc)
    st.stop()

axis = 0
if before.ndim == 3:
    axis = st.radio(
        "Slice along",
        [0, 1, 2],
        format_func=lambda a: "zyx"[a],
        horizontal=True,
        key="denoise_axis",
    )
    index = st.slider(
        "Slice", 0, before.shape[axis] - 1, before.shape[axis] // 2, key="denoise_slice"
    )
else:
    index = 0
a, b, difference = search.before_after(before, after, axis, index)
low, high = np.percentile(a, [0.5, 99.5])
left, middle, right = st.columns(3)
left.image(search.to_display(a, low, high), caption="before", width="stretch")
middle.image(search.to_display(b, low, high), caption="after", width="stretch")
span = float(np.abs(difference).max()) or 1.0
right.image(
    search.to_display(difference, -span, span),
    caption=f"after - before (±{span:.3g})",
    width="stretch",
)
row = st.slider("Profile row", 0, a.shape[0] - 1, a.shape[0] // 2, key="denoise_row")
profile = search.line_profile(a, b, row)
st.plotly_chart(
    px.line(profile, x="position", y="value", color="volume", title=f"line profile, row {row}"),
    key="denoise_profile",
)
st.caption(
    f"noise removed (standard deviation of the difference): {float(difference.std()):.4g}; "
    f"mean change {float(difference.mean()):.3g}"
)
