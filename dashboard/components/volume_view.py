"""Streamlit widgets for volume outputs: orthogonal slices with label overlay, uncertainty, 3D, scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st

from unified_framework.io import read_volume

from . import ui, volumes

#: Above this many voxels, scores skip the surface distances unless asked for.
SURFACE_SCORE_LIMIT = 32 * 2**20


@st.cache_resource(max_entries=16, show_spinner=False)
def open_volume(path: str, mtime: float):
    """A lazily read volume (dask-backed), cached per file version."""
    return read_volume(path, lazy=True)


def load(path: Path):
    return open_volume(str(path), ui.file_mtime(path))


@st.cache_data(max_entries=32, show_spinner=False)
def cached_window(path: str, mtime: float) -> tuple[float, float]:
    return volumes.display_window(open_volume(path, mtime).data)


@st.cache_data(max_entries=16, show_spinner=False)
def present_labels(path: str, mtime: float, max_voxels: int = 8_000_000) -> list[int]:
    """Labels present in a (subsampled) label volume."""
    sample, _ = volumes.strided(open_volume(path, mtime).data, max_voxels)
    return [int(v) for v in np.unique(sample)]


@st.cache_data(max_entries=16, show_spinner="Scoring against ground truth ...")
def cached_scores(
    labels_path: str, labels_mtime: float, truth_path: str, truth_mtime: float, surface: bool
):
    from unified_framework.metrics import score_volumes

    labels = open_volume(labels_path, labels_mtime)
    truth = open_volume(truth_path, truth_mtime)
    return score_volumes(
        np.asarray(labels.data),
        np.asarray(truth.data),
        spacing=labels.spacing,
        surface=surface,
        pred_name=Path(labels_path).name,
        gt_name=Path(truth_path).name,
    )


def class_names(path: Path, volume, labels: list[int]) -> dict[int, str]:
    """Label -> name: from the volume's metadata or a ``dataset.json`` beside it
    (``{"class_names": [...]}``, background first), else ``label k``."""
    names = volume.metadata.get("class_names") if isinstance(volume.metadata, dict) else None
    if not names:
        try:
            names = json.loads((path.parent / "dataset.json").read_text(encoding="utf-8")).get(
                "class_names"
            )
        except (OSError, ValueError, AttributeError):
            names = None
    return {
        k: (str(names[k]) if isinstance(names, list) and k < len(names) else f"label {k}")
        for k in labels
    }


def slice_controls(shape: tuple[int, ...], key: str) -> tuple[int, int]:
    """Axis and slice index widgets; returns (axis, index)."""
    if len(shape) == 2:
        return 0, 0
    left, right = st.columns([1, 3])
    axis = left.segmented_control(
        "Axis",
        [0, 1, 2],
        default=0,
        format_func=lambda a: volumes.AXES[a].upper(),
        key=f"{key}_axis",
        required=True,
    )
    index = right.slider("Slice", 0, shape[axis] - 1, shape[axis] // 2, key=f"{key}_slice_{axis}")
    return axis, index


def overlay_controls(labels: list[int], names: dict[int, str], key: str) -> tuple[float, list[int]]:
    """Opacity slider and class toggles; returns (opacity, visible labels)."""
    left, right = st.columns([1, 3])
    opacity = left.slider("Label opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}_opacity")
    classes = [k for k in labels if k != 0]
    visible = right.pills(
        "Classes",
        classes,
        selection_mode="multi",
        default=classes,
        format_func=lambda k: names.get(k, f"label {k}"),
        key=f"{key}_classes",
    )
    return opacity, list(visible or [])


def slice_panel(roles: dict[str, Path | None], key: str) -> None:
    """Orthogonal slice viewer of the image with label overlay, uncertainty map and 3D view."""
    image_path, labels_path = roles.get("image"), roles.get("labels")
    uncertainty_path, truth_path = roles.get("uncertainty"), roles.get("ground_truth")
    base = load(image_path) if image_path else (load(labels_path) if labels_path else None)
    if base is None:
        st.info("Choose at least an image or a label volume.")
        return
    labels_volume = load(labels_path) if labels_path else None
    if labels_volume is not None and image_path and labels_volume.shape != base.shape:
        st.error(
            f"{labels_path.name}: shape {labels_volume.shape} does not match the image {tuple(base.shape)}"
        )
        labels_volume = None
    st.caption(f"shape {tuple(base.shape)} (z, y, x), voxel size {tuple(base.spacing)} µm")
    three = (
        base.ndim == 3
        and st.segmented_control(
            "Layout",
            ["one", "three"],
            default="one",
            required=True,
            key=f"{key}_layout",
            format_func={"one": "One plane", "three": "Three orthogonal planes"}.get,
        )
        == "three"
    )
    if three:
        sliders = st.columns(3)
        planes = [
            (
                axis,
                sliders[axis].slider(
                    f"{volumes.AXES[axis]} slice",
                    0,
                    base.shape[axis] - 1,
                    base.shape[axis] // 2,
                    key=f"{key}_pos_{axis}",
                ),
            )
            for axis in range(3)
        ]
    else:
        planes = [slice_controls(tuple(base.shape), key)]
    present = (
        present_labels(str(labels_path), ui.file_mtime(labels_path))
        if labels_volume is not None
        else []
    )
    names = class_names(labels_path, labels_volume, present) if labels_volume is not None else {}
    opacity, visible = (
        overlay_controls(present, names, key) if labels_volume is not None else (0.0, [])
    )
    uncertainty = load(uncertainty_path) if uncertainty_path else None
    if uncertainty is not None and uncertainty.shape != base.shape:
        st.warning(
            f"{uncertainty_path.name}: shape {uncertainty.shape} differs from {tuple(base.shape)}"
        )
        uncertainty = None
    window = cached_window(str(image_path), ui.file_mtime(image_path)) if image_path else None

    # One plane: the overlay and the uncertainty side by side; three planes: a row of each.
    if three:
        rows = [st.columns(3) for _ in range(2 if uncertainty is not None else 1)]
    else:
        rows = [st.columns(2 if uncertainty is not None else 1)]
    for number, (axis, index) in enumerate(planes):
        aspect = volumes.slice_aspect(base.spacing, axis) if base.ndim == 3 else 1.0
        label_slice = (
            volumes.orthogonal_slice(labels_volume.data, axis, index)
            if labels_volume is not None
            else None
        )
        if image_path:
            grey = volumes.to_grey(volumes.orthogonal_slice(base.data, axis, index), window)
            rgb = volumes.overlay(grey, label_slice, opacity, visible)
        else:
            rgb = volumes.labels_rgb(label_slice, visible)
        title = f"{volumes.AXES[axis]} = {index}" if base.ndim == 3 else "image"
        overlay_cell = rows[0][number]
        overlay_cell.plotly_chart(
            volumes.image_figure(rgb, title, aspect, height=320 if three else 420),
            key=f"{key}_slice_plot_{number}",
        )
        if uncertainty is not None:
            cell = rows[1][number] if three else rows[0][1]
            values = volumes.orthogonal_slice(uncertainty.data, axis, index)
            cell.plotly_chart(
                volumes.heatmap_figure(
                    values,
                    f"uncertainty {title} ({uncertainty_path.name})",
                    aspect,
                    height=320 if three else 420,
                ),
                key=f"{key}_uncertainty_plot_{number}",
            )

    if labels_volume is not None and base.ndim == 3:
        if st.toggle("3D view (downsampled)", key=f"{key}_3d"):
            with st.spinner("Building the 3D view ..."):
                st.plotly_chart(
                    volumes.scatter_3d(
                        labels_volume.data, visible, labels_volume.spacing, names=names
                    ),
                    key=f"{key}_3d_plot",
                )
    if labels_volume is not None and truth_path:
        scores_panel(
            labels_path,
            truth_path,
            key,
            class_names(truth_path, load(truth_path), list(range(256))),
        )


def scores_panel(labels_path: Path, truth_path: Path, key: str, names: dict[int, str]) -> None:
    """Per-class Dice/IoU/F1/HD95 of a label volume against ground truth."""
    st.subheader("Scores against ground truth")
    labels_volume, truth = load(labels_path), load(truth_path)
    if labels_volume.shape != truth.shape:
        st.error(
            f"{truth_path.name}: shape {truth.shape} does not match {labels_path.name} {labels_volume.shape}"
        )
        return
    big = int(np.prod(labels_volume.shape)) > SURFACE_SCORE_LIMIT
    surface = st.checkbox(
        "Surface distances (HD95)",
        value=not big,
        key=f"{key}_surface",
        help="Costly for large volumes.",
    )
    try:
        table = cached_scores(
            str(labels_path),
            ui.file_mtime(labels_path),
            str(truth_path),
            ui.file_mtime(truth_path),
            surface,
        )
    except Exception as exc:
        ui.show_error(exc)
        return
    table = table.assign(name=[names.get(int(label), str(label)) for label in table["label"]])
    st.dataframe(
        table[["label", "name", "dice", "iou", "f1", "hd95", "gt_voxels", "pred_voxels"]].round(4),
        hide_index=True,
        key=f"{key}_scores",
    )
