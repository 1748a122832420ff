"""Inference: apply a model to an image of any size (tiled), here or as a SLURM job; run a predict service."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from components import inference, predict, ui, volumes

from unified_framework.errors import MDLMAError
from unified_framework.inference import service

st.title("Inference")
root = ui.home()
st.caption(
    "Tiled inference of a SUN, HRNet (active learning), nnU-Net, Keras or bioimage.io model on an "
    "image or volume of any size (2D models go slice by slice through volumes): "
    "Gaussian-blended tiles, memory bounded by the budget, output an OME-Zarr "
    "(`mdlma infer`, docs/inference.md). Paths are relative to your home folder or absolute."
)

with st.expander("Try it: a small untrained model and a phantom slice"):
    if st.button("Create the sample", key="inference_sample"):
        with st.spinner("Writing the sample ..."):
            sample_model, sample_image = inference.make_sample(root)
        st.session_state["inference_model_path"] = str(sample_model.relative_to(root))
        st.session_state["inference_image_path"] = str(sample_image.relative_to(root))
        st.rerun()


@st.cache_data(ttl=30, show_spinner=False)
def models_below(folder: str) -> dict[str, str]:
    """Every model below ``folder``: path -> its kind in a few words."""
    return {str(p): inference.short_kind(p) for p in inference.find_models(Path(folder))}


@st.cache_data(ttl=600, show_spinner="Opening the model ...", max_entries=16)
def describe_model(path: str, dims: int, stamp: float) -> dict:
    """The model's facts for the settings (``stamp``: its modification time, so a new file reloads)."""
    return inference.model_info(path, dims)


# ---------------------------------------------------------------- model and image
left, right = st.columns(2)
with left:
    found = models_below(str(root))
    picked = st.selectbox(
        f"Model ({len(found)} found below your home)",
        ["", *found],
        key="inference_model_found",
        format_func=lambda p: (
            f"{Path(p).relative_to(root)} · {found[p]}" if p else "(type a path below)"
        ),
        help="SUN packages and active-learning HRNet/U-Net models (.pt), nnU-Net model folders "
        "(mdlma nnunet import), Keras (.keras), bioimage.io packages (folder with rdf.yaml or .zip)",
    )
    if picked:
        st.session_state["inference_model_path"] = str(Path(picked).relative_to(root))
    model_text = st.text_input("Model path", key="inference_model_path")
with right:
    source = st.segmented_control(
        "Image from", ["file", "catalogue"], default="file", key="inference_image_source"
    )
    image_text = ""
    if source == "catalogue":
        try:
            from unified_framework.catalogue import Query, dataset_path, open_catalogue

            datasets = open_catalogue(ui.settings()).search(Query(limit=100)).datasets
        except MDLMAError as exc:
            ui.show_error(exc)
            datasets = []
        if datasets:
            pid = st.selectbox(
                "Dataset",
                [d["pid"] for d in datasets],
                key="inference_dataset",
                format_func=lambda p: next(
                    d.get("datasetName") or p for d in datasets if d["pid"] == p
                ),
            )
            image_text = dataset_path(next(d for d in datasets if d["pid"] == pid))
            st.caption(f"`{image_text}`")
        else:
            st.caption("The catalogue is empty (`mdlma catalogue ingest`).")
    else:
        image_text = st.text_input(
            "Image path",
            key="inference_image_path",
            help="FILE, FILE.h5::/dataset or SLIDE.tif::LEVEL",
        )

if not model_text or not image_text:
    st.info("Choose a model and an image (or create the sample above).")
else:
    model_path = inference.resolve(root, model_text)
    image = inference.resolve(root, image_text)
    try:
        info = inference.image_info(image)
        stamp = Path(model_path).stat().st_mtime if Path(model_path).exists() else 0.0
        spec = describe_model(model_path, info["dims"], stamp)
    except MDLMAError as exc:
        ui.show_error(exc)
        st.stop()
    st.caption(
        f"image {' × '.join(map(str, info['shape']))}, {info['channels']} channel(s) · model: "
        f"{spec['kind'] or 'model'}; {spec['in_channels']} channel(s) in, {spec['num_classes']} "
        f"classes, {spec['spatial_dims']}D patches {spec['patch']}, sides multiples of {spec['divisor']}"
    )

    # ------------------------------------------------------------ settings
    st.subheader("Tiles, memory and workers")
    cols = st.columns(4)
    default_patch = " ".join(
        str(min(p, s - s % d) or d)
        for p, s, d in zip(spec["patch"], info["shape"], spec["divisor"])
    )
    patch_text = cols[0].text_input(
        "tile size", default_patch, key="inference_patch", help="One side per axis, e.g. 256 256"
    )
    overlap = cols[1].slider("overlap", 0.0, 0.75, 0.5, 0.05, key="inference_overlap")
    budget = cols[2].number_input(
        "budget (MB per process)", 16, 65536, 1024, step=64, key="inference_budget"
    )
    workers = cols[3].number_input("workers", 1, 64, 1, key="inference_workers")
    cols = st.columns(4)
    flips = cols[0].toggle("test-time flips", key="inference_flips")
    tissue = cols[1].selectbox(
        "tissue detection", ["auto", "dark", "bright", "off"], key="inference_tissue"
    )
    probabilities = cols[2].toggle("store probabilities", True, key="inference_probabilities")
    if st.session_state.pop("inference_out_used", False):
        st.session_state.pop("inference_out", None)  # a finished run: suggest a fresh output
    suggested = inference.default_output(root, image, model_path)
    out_text = cols[3].text_input(
        "output (.zarr)", str(suggested.relative_to(root)), key="inference_out"
    )
    try:
        patch = tuple(int(p) for p in patch_text.split())
    except ValueError:
        st.error(f"tile size {patch_text!r}: expected whole numbers separated by spaces")
        st.stop()
    settings = dict(
        patch=patch,
        overlap=float(overlap),
        budget=int(budget) * 2**20,
        flips=bool(flips),
        tissue=tissue,
        probabilities=bool(probabilities),
    )
    out = Path(inference.resolve(root, out_text))
    small = info["pixels"] <= inference.LOCAL_MAX_PIXELS
    run_cols = st.columns([1, 1, 3])
    run_local = run_cols[0].button(
        "Run here",
        type="primary",
        disabled=not small,
        key="inference_run",
        help=None
        if small
        else f"more than {inference.LOCAL_MAX_PIXELS / 2**20:.0f} M pixels: submit a job",
    )
    run_job = run_cols[1].button(
        f"Submit infer job ({int(workers)} task(s))",
        key="inference_submit",
        help="SLURM array of the infer template: one task per worker, then a merge job",
    )
    if run_local:
        bar = st.progress(0.0, text="Planning ...")
        try:
            report = inference.run_here(
                model_path,
                image,
                out,
                settings,
                workers=int(workers),
                progress=lambda done, total: bar.progress(
                    done / max(total, 1), text=f"block {done} of {total}"
                ),
            )
        except MDLMAError as exc:
            ui.show_error(exc)
        else:
            bar.progress(
                1.0, text=f"done: {report.tiles_predicted} tiles in {report.seconds:.1f} s"
            )
            st.session_state["inference_result"] = str(out)
            st.session_state["inference_result_image"] = image
            st.session_state["inference_out_used"] = True
    if run_job:
        try:
            record = inference.submit(model_path, image, out, settings, int(workers))
        except MDLMAError as exc:
            ui.show_error(exc)
        else:
            ui.clear_cluster_cache()
            st.success(f"Submitted {' '.join(record.job_ids)} (array + merge) → {out}")
            ui.viewer_link(record.job_ids[0])
            st.session_state["inference_result"] = str(out)
            st.session_state["inference_result_image"] = image
            st.session_state["inference_out_used"] = True

# ---------------------------------------------------------------- result
result = st.session_state.get("inference_result")
if result:
    st.subheader("Result")
    result_path, result_image = Path(result), st.session_state["inference_result_image"]
    if not (result_path / "0").exists():
        st.info(f"{result_path} is not finished yet (the job's merge step writes it).")
        st.button("Refresh", key="inference_refresh")
    else:
        import zarr

        labels_shape = zarr.open_group(str(result_path), mode="r")["0"].shape
        index = None
        if len(labels_shape) == 3:
            index = st.slider(
                "z slice", 0, labels_shape[0] - 1, labels_shape[0] // 2, key="inference_z"
            )
        opacity = st.slider("label opacity", 0.0, 1.0, 0.5, 0.05, key="inference_opacity")
        try:
            grey, labels, step = inference.preview(result_path, result_image, index)
        except MDLMAError as exc:
            ui.show_error(exc)
        else:
            present = [int(v) for v in np.unique(labels)]
            rgb = volumes.overlay(grey, labels, opacity, present)
            st.plotly_chart(
                volumes.image_figure(
                    rgb,
                    f"{result_path.name} ({'full resolution' if step == 1 else f'every {step}th pixel'})",
                ),
                key="inference_overlay",
            )
            st.caption(f"`{result_path}` · labels present: {present}")

# ---------------------------------------------------------------- predict service
st.subheader("Predict service")
st.caption(
    "`mdlma serve` on loopback: the Segmentation comparison and Annotate pages send it the slice "
    "they show. Services announce themselves in your home's `services/` folder."
)
running = service.running_services(root)
if running:
    st.dataframe(
        pd.DataFrame(
            [{"url": s["url"], "models": ", ".join(s["models"]), "pid": s["pid"]} for s in running]
        ),
        hide_index=True,
        key="inference_services",
    )
    stop_cols = st.columns([2, 1])
    stop = stop_cols[0].selectbox(
        "service",
        range(len(running)),
        format_func=lambda i: predict.describe(running[i]),
        key="inference_stop_choice",
    )
    if stop_cols[1].button("Stop", key="inference_stop"):
        service.stop_service(running[int(stop or 0)])
        st.rerun()
else:
    st.caption("No service running.")
start_cols = st.columns([3, 1, 1, 1])
serve_models = start_cols[0].multiselect(
    "models to serve",
    list(models_below(str(root))),
    key="inference_serve_models",
    format_func=lambda p: str(Path(p).relative_to(root)),
)
port = start_cols[1].number_input("port", 1024, 65535, 8765, key="inference_serve_port")
dims = start_cols[2].selectbox("request dims", [2, 3], key="inference_serve_dims")
if start_cols[3].button("Start", key="inference_serve_start", disabled=not serve_models):
    try:
        process = service.start_service(
            serve_models,
            int(port),
            root,
            dims=int(dims),
            log=root / "services" / f"serve-{int(port)}.log",
        )
        with st.spinner("Starting the service ..."):
            service.wait_for_service(int(port), process, root)
    except MDLMAError as exc:
        ui.show_error(exc)
    else:
        st.rerun()
