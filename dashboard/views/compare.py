"""Segmentation comparison: methods against ground truth, locally or as SLURM jobs.

Two views: classical baselines and SUN models on one dataset with ground truth, and
every method (SUN, nnU-Net, classical) trained and scored on the same held-out data by
``mdlma compare`` (:mod:`components.method_comparison`).
"""

from pathlib import Path

import numpy as np
import plotly.express as px
import streamlit as st
from components import cluster, compare, method_comparison, paths, predict, ui, volume_view, volumes

st.title("Segmentation comparison")
root = ui.home()
user = ui.current_user()
view = st.segmented_control(
    "Compare",
    ["dataset", "methods"],
    default="methods" if st.query_params.get("view") == "methods" else "dataset",
    required=True,
    format_func={
        "dataset": "Classical and SUN on one dataset",
        "methods": "Every method on held-out data (SUN, nnU-Net, classical)",
    }.get,
    key="compare_view",
)
if view == "methods":
    method_comparison.render(root)
    st.stop()


@st.cache_data(ttl=30, show_spinner=False)
def datasets_below(folder: str) -> list[compare.Dataset]:
    return compare.find_datasets(Path(folder))


@st.cache_data(ttl=30, show_spinner=False)
def models_below(folder: str) -> list[Path]:
    return paths.walk_files(
        Path(folder), lambda p: p.suffix in (".pt", ".pth") and p.is_file(), max_depth=4
    )


datasets = datasets_below(str(root))
with st.expander(
    "Create a phantom dataset (implant in bone, with ground truth)", expanded=not datasets
):
    size = st.columns(4)
    shape = [
        size[i].number_input(axis, 16, 512, 64, step=16, key=f"compare_phantom_{axis}")
        for i, axis in enumerate(("z", "y", "x"))
    ]
    seed = size[3].number_input("seed", 0, 10_000, 0, key="compare_phantom_seed")
    if st.button("Create dataset", key="compare_phantom_create"):
        with st.spinner("Generating the phantom ..."):
            made = compare.make_phantom_dataset(root, shape, seed)
        datasets_below.clear()
        st.session_state["compare_dataset"] = made.name
        st.rerun()

if not datasets:
    st.info(
        f"No dataset with ground truth below {root}. Create a phantom above, or put an image and its "
        "ground truth (e.g. scan.tif and scan_gt.tif) into a folder there."
    )
    st.stop()

names = [d.name for d in datasets]
chosen = st.selectbox("Dataset", names, key="compare_dataset")
dataset = datasets[names.index(chosen)]
size = compare.voxels(dataset.image)
st.caption(f"image {dataset.image} · ground truth {dataset.truth} · {size / 1e6:.1f} M voxels")

st.subheader("Methods")
left, right = st.columns(2)
classical = left.multiselect(
    "Classical baselines",
    ["multi-otsu", "watershed"],
    default=["multi-otsu", "watershed"],
    key="compare_classical",
)
options = left.columns(3)
classes = options[0].number_input(
    "Intensity classes",
    2,
    16,
    5,
    key="compare_classes",
    help="Grey-value classes to find; background often has two (air and tissue).",
)
smoothing = options[1].number_input(
    "Smoothing σ",
    0.0,
    10.0,
    1.0,
    0.5,
    key="compare_smoothing",
    help="Gaussian sigma in voxels before thresholding.",
)
order = options[2].text_input(
    "Label order",
    "truth",
    key="compare_order",
    help="Class number per intensity class, darkest first (e.g. 0,0,3,1,2), or 'truth' "
    "to name each intensity class after the ground-truth class it overlaps most.",
)
models = models_below(str(root))
chosen_models = right.multiselect(
    "SUN models",
    models,
    format_func=lambda p: str(p.relative_to(root)),
    key="compare_models",
    placeholder="trained models below your MDLMA home",
)
if not models:
    right.caption(
        "No trained SUN model (.pt) below your MDLMA home yet (train one with `mdlma sun train`)."
    )

local_ok = size <= compare.LOCAL_VOXEL_LIMIT
where = st.segmented_control(
    "Run",
    ["here", "cluster"],
    default="here" if local_ok else "cluster",
    required=True,
    format_func={"here": "Here (small data)", "cluster": "On the cluster (SLURM)"}.get,
    key="compare_where",
)

job_options = {}
if where == "cluster":
    slurm_options = st.columns(4)
    try:
        partition_names = ["", *ui.cached_cluster_state((str(root),))[0]["partition"]]
    except Exception as exc:
        ui.show_error(exc)
        partition_names = [""]
    job_options = {
        "partition": slurm_options[0].selectbox(
            "Partition",
            partition_names,
            key="compare_partition",
            format_func=lambda p: p or "(default)",
        ),
        "cpus": slurm_options[1].number_input("CPUs per method", 1, 128, 2, key="compare_cpus"),
        "mem": slurm_options[2].text_input("Memory per method", "4G", key="compare_mem"),
        "time": slurm_options[3].text_input("Time limit", "00:30:00", key="compare_time"),
    }

problems = []
if order.strip() and order.strip() != "truth":
    try:
        values = [int(v) for v in order.split(",")]
        if len(values) != classes:
            problems.append(
                f"Label order: {len(values)} class numbers given, but {classes} intensity classes."
            )
    except ValueError:
        problems.append(
            "Label order: expected comma-separated integers such as 0,0,3,1,2, or 'truth'."
        )
if where == "here" and not local_ok:
    problems.append(
        f"{size / 1e6:.0f} M voxels is too large to run here (limit "
        f"{compare.LOCAL_VOXEL_LIMIT / 1e6:.0f} M); run it on the cluster."
    )
if not classical and not chosen_models:
    problems.append("Choose at least one method.")
for problem in problems:
    st.error(problem)

methods = []
for method in classical:
    opts = {
        "method": method,
        "classes": int(classes),
        "smoothing": float(smoothing),
        "label_order": order.strip(),
    }
    methods.append(compare.Method("classical", compare.method_name("classical", opts), opts))
for model in chosen_models:
    methods.append(compare.Method("sun", compare.method_name("sun", {}, model), {}, model))

if st.button("Run comparison", type="primary", disabled=bool(problems), key="compare_run"):
    run_dir = compare.new_run_dir(root, dataset)
    scripts = {m.name: compare.write_method_script(m, dataset, run_dir) for m in methods}
    if where == "here":
        compare.save_run_plan(run_dir, dataset, methods, "here")
        progress = st.progress(0.0, text="Starting ...")
        errors = compare.run_locally(
            scripts,
            on_start=lambda name, i: progress.progress(
                i / len(scripts), text=f"{name} ({i + 1}/{len(scripts)})"
            ),
        )
        progress.progress(1.0, text="Done")
        for name, error in errors.items():
            st.error(f"{name}: {error}")
    else:
        jobs = {}
        for name, script in scripts.items():
            try:
                jobs[name] = cluster.submit_script(script, f"compare-{name}", job_options)
            except Exception as exc:
                ui.show_error(exc)
        compare.save_run_plan(run_dir, dataset, methods, "cluster", jobs)
        ui.clear_cluster_cache()
    st.session_state["compare_run_dir"] = str(run_dir)

with st.expander("Ad hoc prediction from a predict service (`mdlma serve`)"):
    st.caption(
        "Send one slice of this dataset to a running service and compare its labels with the "
        "ground truth (start a service on the Inference page)."
    )
    adhoc_image = volume_view.load(dataset.image)
    adhoc_axis, adhoc_index = volume_view.slice_controls(tuple(adhoc_image.shape), "compare_adhoc")
    adhoc_slice = np.asarray(
        volumes.orthogonal_slice(adhoc_image.data, adhoc_axis, adhoc_index), np.float32
    )
    adhoc_labels = predict.predict_panel(adhoc_slice, "compare_adhoc", root)
    if adhoc_labels is not None:
        adhoc_truth = volumes.orthogonal_slice(
            volume_view.load(dataset.truth).data, adhoc_axis, adhoc_index
        )
        adhoc_window = volume_view.cached_window(str(dataset.image), ui.file_mtime(dataset.image))
        adhoc_grey = volumes.to_grey(adhoc_slice, adhoc_window)
        adhoc_cols = st.columns(2)
        for column, (title, shown) in zip(
            adhoc_cols, (("predict service", adhoc_labels), ("ground truth", adhoc_truth))
        ):
            rgb = volumes.overlay(adhoc_grey, shown, 0.5, [int(v) for v in np.unique(shown)])
            column.plotly_chart(
                volumes.image_figure(rgb, title, height=340), key=f"compare_adhoc_{title}"
            )
        agreement = float((np.asarray(adhoc_truth) == adhoc_labels).mean())
        st.caption(
            f"pixels where the service agrees with the ground truth: {100 * agreement:.1f} %"
        )

st.subheader("Results")
runs = compare.list_runs(root, dataset)
if not runs:
    st.info("No comparison of this dataset yet.")
    st.stop()
run_dir = st.selectbox("Run", runs, format_func=lambda p: p.name, key="compare_run_choice")
plan, reports = compare.read_run(run_dir)
done = {r["name"] for r in reports}
missing = [m for m in plan.get("methods", []) if m not in done]
if missing:
    jobs = plan.get("jobs", {})
    states = cluster.job_states([jobs[m] for m in missing if m in jobs]) if jobs else {}
    st.info(
        "No results yet from: "
        + ", ".join(
            f"{m} (job {jobs[m]}, {states.get(jobs[m], 'unknown')})" if m in jobs else m
            for m in missing
        )
    )
    for name in missing:
        if name in jobs:
            ui.viewer_link(jobs[name], label=f"{name}: job {jobs[name]} (log)")
    if plan.get("where") == "cluster":
        st.button("Refresh", key="compare_refresh")

table = compare.score_table(reports)
if table.empty:
    st.stop()
st.dataframe(table.round(4), hide_index=True, key="compare_scores")
if table["order_from_truth"].any():
    st.caption(
        "Classical rows marked order_from_truth name their intensity classes by majority vote against the "
        "ground truth (the usual way to score unsupervised methods)."
    )
figure = px.bar(
    table,
    x="class",
    y="dice",
    color="method",
    barmode="group",
    title="Dice per class",
    range_y=(0, 1),
)
st.plotly_chart(figure, key="compare_dice_plot")

st.subheader("Overlays")
image = volume_view.load(dataset.image)
axis, index = volume_view.slice_controls(tuple(image.shape), "compare")
opacity = st.slider("Label opacity", 0.0, 1.0, 0.5, 0.05, key="compare_opacity")
window = volume_view.cached_window(str(dataset.image), ui.file_mtime(dataset.image))
grey = volumes.to_grey(volumes.orthogonal_slice(image.data, axis, index), window)
panels = [("ground truth", dataset.truth)] + [(r["name"], Path(r["labels_path"])) for r in reports]
aspect = volumes.slice_aspect(image.spacing, axis) if image.ndim == 3 else 1.0
for start in range(0, len(panels), 3):
    columns = st.columns(3)
    for column, (name, path) in zip(columns, panels[start : start + 3]):
        if not path.exists():
            column.warning(f"{name}: {path.name} missing")
            continue
        labels = volume_view.load(path)
        slice_labels = volumes.orthogonal_slice(labels.data, axis, index)
        rgb = volumes.overlay(
            grey, slice_labels, opacity, [int(v) for v in np.unique(slice_labels)]
        )
        column.plotly_chart(
            volumes.image_figure(rgb, name, aspect, height=340), key=f"compare_overlay_{name}"
        )
