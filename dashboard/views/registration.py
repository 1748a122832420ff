"""Registration results: fixed, moving and warped side by side, blend/checkerboard, Jacobian, quality."""

from pathlib import Path

import pandas as pd
import streamlit as st
from components import registration, ui, volume_view, volumes

from unified_framework.registration import quality_rows

st.title("Registration")
root = ui.home()


@st.cache_data(ttl=30, show_spinner=False)
def results_below(folder: str) -> list[registration.RegistrationFolder]:
    return registration.find_results(Path(folder))


results = results_below(str(root))
with st.expander(
    "Register a phantom pair here (known deformation, convexAdam on the CPU)", expanded=not results
):
    cols = st.columns(4)
    side = cols[0].number_input("side (voxels)", 32, 96, 48, step=16, key="registration_side")
    seed = cols[1].number_input("seed", 0, 10_000, 0, key="registration_seed")
    multimodal = cols[2].toggle(
        "second modality",
        key="registration_multimodal",
        help="Non-monotonic grey values and other noise for the moving scan (like x-ray vs neutron).",
    )
    if cols[3].button("Register", key="registration_create"):
        with st.spinner("Making the pair and registering it ..."):
            made = registration.make_sample_registration(
                root, (int(side),) * 3, int(seed), bool(multimodal)
            )
        results_below.clear()
        st.session_state["registration_result"] = str(made)
        st.rerun()
st.caption(
    "Larger volumes: submit the `register` template in the job composer; its result folder appears here."
)

if not results:
    st.info(
        f"No registration result (a folder with quality.json from `mdlma register`) below {root} yet."
    )
    st.stop()

names = [r.name for r in results]
chosen = st.selectbox(
    "Result",
    names,
    key="registration_result",
    format_func=lambda n: str(Path(n).relative_to(root)) if Path(n).is_relative_to(root) else n,
)
result = results[names.index(chosen)]
report = result.report
roots = ui.job_roots()
fixed_path, moving_path = result.source("fixed", roots), result.source("moving", roots)
warped_path, jacobian_path = result.file("warped"), result.file("jacobian")
st.caption(
    f"{report['method']} · {report.get('prealign', 'none')} pre-alignment · bin {report.get('bin', 1)} · "
    f"{report.get('timings', {}).get('total_s', float('nan')):.1f} s"
)

st.subheader("Quality before and after")
st.dataframe(
    pd.DataFrame(quality_rows(report), columns=["figure", "before", "after"]), hide_index=True
)

missing = [
    name
    for name, path in (("fixed", fixed_path), ("moving", moving_path), ("warped", warped_path))
    if path is None
]
if missing:
    st.warning(
        f"Cannot show the slices: {', '.join(missing)} not found (or outside your job folders)."
    )
    st.stop()
try:
    fixed, moving, warped = (
        volume_view.load(fixed_path),
        volume_view.load(moving_path),
        volume_view.load(warped_path),
    )
except Exception as exc:  # unreadable or vanished files: one line, no traceback
    ui.show_error(exc)
    st.stop()
if warped.shape != fixed.shape:
    st.error(
        f"{warped_path.name}: shape {warped.shape} differs from the fixed volume {fixed.shape}"
    )
    st.stop()

axis, index = volume_view.slice_controls(tuple(fixed.shape), "registration")
aspect = volumes.slice_aspect(fixed.spacing, axis)
window = volume_view.cached_window(str(fixed_path), ui.file_mtime(fixed_path))
moving_window = volume_view.cached_window(str(moving_path), ui.file_mtime(moving_path))
fixed_grey = volumes.to_grey(volumes.orthogonal_slice(fixed.data, axis, index), window)
warped_grey = volumes.to_grey(volumes.orthogonal_slice(warped.data, axis, index), moving_window)
moving_index = int(index * moving.shape[axis] / fixed.shape[axis])
moving_grey = volumes.to_grey(
    volumes.orthogonal_slice(moving.data, axis, moving_index), moving_window
)
cells = st.columns(3)
for cell, grey, title in zip(
    cells, (fixed_grey, moving_grey, warped_grey), ("fixed", "moving", "warped moving")
):
    cell.plotly_chart(
        volumes.image_figure(
            grey[..., None].repeat(3, axis=2),
            f"{title} ({volumes.AXES[axis]} = {index})",
            aspect,
            height=340,
        ),
        key=f"registration_plot_{title}",
    )

left, right = st.columns(2)
mode = left.segmented_control(
    "Compare", ["blend", "checkerboard"], default="blend", required=True, key="registration_mode"
)
if mode == "blend":
    alpha = left.slider("fixed ← → warped", 0.0, 1.0, 0.5, 0.05, key="registration_alpha")
    comparison = registration.blend(fixed_grey, warped_grey, alpha)
else:
    tile = left.slider("tile (voxels)", 2, 64, 8, key="registration_tile")
    comparison = registration.checkerboard(fixed_grey, warped_grey, tile)
left.plotly_chart(
    volumes.image_figure(comparison, f"fixed vs warped, {mode}", aspect),
    key="registration_compare_plot",
)
if jacobian_path is not None:
    jacobian = volume_view.load(jacobian_path)
    factor = max(1, round(fixed.shape[axis] / jacobian.shape[axis]))
    values = volumes.orthogonal_slice(
        jacobian.data, axis, min(index // factor, jacobian.shape[axis] - 1)
    )
    folding = report["jacobian"]["folding_fraction"]
    right.plotly_chart(
        volumes.heatmap_figure(
            values,
            f"Jacobian determinant (folding {100 * folding:.3f} %)",
            aspect,
            colorscale="RdBu",
        ),
        key="registration_jacobian_plot",
    )
    right.caption("1: volume kept, > 1 expanded, < 1 compressed, ≤ 0 folded (not invertible).")
