"""Annotate: label the slices active learning asks for, then train the next round on the cluster."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from components import annotate, predict, ui
from PIL import Image

from unified_framework import hpc
from unified_framework.active_learning import loop
from unified_framework.active_learning.pool import IGNORE, SliceId
from unified_framework.active_learning.project import Project
from unified_framework.errors import MDLMAError

st.title("Annotate")
root = ui.home()
projects = annotate.find_projects(root)

with st.expander(
    "New project on implant phantoms (small, trains in minutes on a CPU)", expanded=not projects
):
    cols = st.columns([2, 1, 1, 1])
    name = cols[0].text_input("name", "phantom", key="annotate_new_name")
    side = cols[1].number_input("side (pixels)", 32, 128, 48, step=16, key="annotate_new_side")
    seed = cols[2].number_input("seed", 0, 10_000, 0, key="annotate_new_seed")
    if cols[3].button("Create", key="annotate_create"):
        try:
            made = annotate.create_sample_project(root, name.strip(), int(side), int(seed))
        except MDLMAError as exc:
            ui.show_error(exc)
        else:
            st.session_state["annotate_project"] = str(made)
            st.rerun()
st.caption(
    f"Projects of your own volumes: `mdlma al init {root / annotate.PROJECTS}/NAME --volume ... --classes ...`."
)
if not projects:
    st.info(f"No active-learning project below {root / annotate.PROJECTS} yet.")
    st.stop()

chosen = st.selectbox(
    "Project",
    [str(p) for p in projects],
    key="annotate_project",
    format_func=lambda p: Path(p).name,
)
try:
    project = Project(chosen)
    pool = project.pool
except MDLMAError as exc:
    ui.show_error(exc)
    st.stop()
classes = project.class_names

summary = st.columns(4)
summary[0].metric("slices in the pool", len(pool))
summary[1].metric("labelled", len(project.labelled))
summary[2].metric("rounds", len(project.rounds))
summary[3].metric("function", project.state["function"])

pending = project.pending
if not pending:
    st.write("No slice is waiting for labels.")
    if st.button("Query the next slices", type="primary", key="annotate_query"):
        try:
            with st.spinner("Scoring the pool ..."):
                loop.query(project)
        except MDLMAError as exc:
            ui.show_error(exc)
        else:
            st.rerun()
else:
    sid_key = st.selectbox(
        f"Queried slices waiting for labels ({len(pending)})",
        [s.key for s in pending],
        key="annotate_slice",
        help="Volume : axis : slice index, most informative first.",
    )
    sid = SliceId.parse(sid_key)
    image = pool.image(sid)
    grey = annotate.grey(image)
    model_path = project.latest_model()

    @st.cache_data(show_spinner="Predicting the slice ...", max_entries=16)
    def proposal_of(folder: str, key: str, model: str, mtime: float):
        result = loop.propose(Project(folder), SliceId.parse(key))
        return result

    proposal = (
        proposal_of(chosen, sid.key, str(model_path), ui.file_mtime(model_path))
        if model_path
        else None
    )
    options = st.columns(4)
    use_proposal = options[0].toggle(
        "start from the proposal",
        value=proposal is not None,
        disabled=proposal is None,
        key="annotate_use_proposal",
    )
    tool = options[1].selectbox(
        "paint class",
        range(len(classes)),
        format_func=lambda c: classes[c],
        key="annotate_class",
        help="Painting with the background class erases other classes.",
    )
    brush = options[2].slider("brush size", 1, 40, 12, key="annotate_brush")
    alpha = options[3].slider("overlay opacity", 0.0, 1.0, 0.4, key="annotate_alpha")

    base = annotate.base_labels(project, sid, proposal[0] if proposal else None, use_proposal)
    scale = annotate.scale_for(grey.shape)
    shown = annotate.overlay(grey, base, alpha, len(classes))
    background = Image.fromarray(shown).resize(
        (grey.shape[1] * scale, grey.shape[0] * scale), Image.NEAREST
    )
    legend = " · ".join(
        f"<span style='color:{annotate.colour(c)}'>■</span> {n}" for c, n in enumerate(classes)
    )
    st.markdown(legend, unsafe_allow_html=True)

    from streamlit_drawable_canvas import st_canvas  # needs a running Streamlit app

    version = st.session_state.get(f"annotate_version_{sid.key}", 0)
    left, right = st.columns([3, 2])
    with left:
        canvas = st_canvas(
            stroke_width=int(brush),
            stroke_color=annotate.colour(int(tool)),
            background_image=background,
            height=grey.shape[0] * scale,
            width=grey.shape[1] * scale,
            drawing_mode="freedraw",
            key=f"annotate_canvas_{sid.key}_{version}_{int(use_proposal)}",
        )
        painted = [
            o
            for o in ((canvas.json_data or {}).get("objects") or [])
            if str(o.get("type", "")).lower() == "path"
        ]
        st.caption(
            f"{len(painted)} stroke(s) painted; the canvas toolbar undoes, redoes and clears them."
        )
    with right:
        if proposal is not None:
            st.image(
                annotate.overlay(grey, proposal[0], 0.5, len(classes)),
                caption=f"model proposal ({Path(model_path).name})",
                width="stretch",
            )
            st.image(annotate.heat(proposal[1]), caption="uncertainty (entropy)", width="stretch")
        else:
            st.info("No model yet: paint the classes you see (unpainted pixels stay unlabelled).")

    with st.expander("Ask a predict service (`mdlma serve`) for this slice"):
        # pool slices are (channels, y, x); the service takes (y, x) or channels last
        plane = np.asarray(image, np.float32)
        plane = plane[0] if plane.ndim == 3 and plane.shape[0] == 1 else plane
        plane = np.moveaxis(plane, 0, -1) if plane.ndim == 3 else plane
        served = predict.predict_panel(plane, "annotate_adhoc", root)
        if served is not None:
            if served.shape != grey.shape or int(served.max()) >= len(classes):
                st.warning(
                    f"the service answered labels {served.shape} up to {int(served.max())}; this "
                    f"project expects {grey.shape} with {len(classes)} classes"
                )
            else:
                st.image(
                    annotate.overlay(grey, served, 0.5, len(classes)),
                    caption="predict service",
                    width=min(512, grey.shape[1] * scale),
                )
                if st.button(
                    "Save the service's labels",
                    key="annotate_adhoc_accept",
                    help="Save these labels for this slice unchanged.",
                ):
                    project.save_labels(sid, served, by=ui.current_user(), source="service")
                    st.session_state.pop("annotate_slice", None)
                    st.rerun()

    strokes = annotate.rasterize_strokes(
        canvas.json_data, grey.shape[0] * scale, grey.shape[1] * scale
    )
    buttons = st.columns([1, 1, 1, 2])
    fill = buttons[2].toggle(
        "unpainted = background",
        value=False,
        key="annotate_fill",
        help="Otherwise pixels nobody painted stay unlabelled and carry no loss.",
    )
    if buttons[0].button("Save labels", type="primary", key="annotate_save"):
        labels = annotate.labels_from_canvas(strokes, base, len(classes), scale)
        if fill:
            labels[labels == IGNORE] = 0
        try:
            project.save_labels(sid, labels, by=ui.current_user(), source="annotate")
        except MDLMAError as exc:
            ui.show_error(exc)
        else:
            st.session_state[f"annotate_version_{sid.key}"] = version + 1
            st.session_state.pop("annotate_slice", None)
            st.toast(f"Saved {sid.key}")
            st.rerun()
    if buttons[1].button(
        "Accept proposal",
        disabled=proposal is None,
        key="annotate_accept",
        help="Save the model's labels for this slice unchanged.",
    ):
        project.save_labels(sid, proposal[0], by=ui.current_user(), source="proposal")
        st.session_state.pop("annotate_slice", None)
        st.rerun()

st.subheader("Training")
progress = annotate.training_progress(project)
job = project.state.get("training_job")
cols = st.columns([1, 3])
if cols[0].button(
    "Train next round",
    key="annotate_train",
    disabled=not project.labelled,
    help="Submits the al-train job template for this project.",
):
    try:
        record = hpc.submit("al-train", {"project": str(project.folder)}, cwd=str(project.folder))
    except MDLMAError as exc:
        ui.show_error(exc)
    else:
        annotate.record_training_job(project, record.job_ids[0], str(record.path))
        ui.clear_cluster_cache()
        st.toast(f"Submitted job {record.job_ids[0]}")
        st.rerun()
with cols[1]:
    if job:
        states = [s.state for s in ui.cached_queue(ui.current_user()) if s.job_id == job["id"]]
        st.caption(f"job {job['id']}: {states[0] if states else 'not in the queue (finished?)'}")
    if progress:
        st.progress(
            progress["step"] / max(progress["steps"], 1),
            text=f"step {progress['step']} of {progress['steps']}"
            + (" (finished)" if progress["finished"] else ""),
        )
    if job:
        ui.viewer_link(job["id"])

curve = annotate.learning_curve(project)
st.subheader("Learning curve")
if curve:
    frame = pd.DataFrame(curve).set_index("labelled slices")
    st.line_chart(frame, x_label="labelled slices", y_label="held-out Dice")
else:
    st.caption("Appears once a round's model has been scored on the held-out volumes.")
