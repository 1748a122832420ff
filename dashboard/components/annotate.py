"""Data logic of the Annotate page: projects, overlays, labels from the painted canvas, progress.

The canvas is ``streamlit-drawable-canvas`` (0.13, a Streamlit components-v2 package):
it paints strokes in class colours over the slice, scaled up by an integer factor, and
returns them as Fabric.js objects; :func:`rasterize_strokes` draws their paths again
(PIL, the stroke's width, round ends) and :func:`labels_from_canvas` turns that into
class indices at the slice's resolution (nearest class colour where strokes cover a
quarter of a pixel's screen block). The strokes' vectors, not the canvas' pixels, are used: the pixels come
back composited with the background image. It imports only inside a running Streamlit app (``streamlit run`` or
AppTest), where Streamlit has scanned the installed component manifests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unified_framework.active_learning.pool import IGNORE
from unified_framework.active_learning.project import Project

#: Class colours (background first), distinct and readable over grey images.
COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#7f7f7f",
)
#: Folder below the user's MDLMA home that holds the Annotate page's projects.
PROJECTS = "al-projects"


def colour(index: int) -> str:
    """Hex colour of class ``index``."""
    return COLOURS[index % len(COLOURS)]


def rgb(hex_colour: str) -> np.ndarray:
    """``#rrggbb`` as a uint8 array of 3."""
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)


def find_projects(root: Path) -> list[Path]:
    """Project folders below ``root/al-projects`` (those with a manifest), by name."""
    folder = root / PROJECTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file())


def create_sample_project(root: Path, name: str, side: int = 48, seed: int = 0) -> Path:
    """A project on implant phantoms (two pool volumes, one held out), small and fast.

    Returns
    -------
    pathlib.Path
        The project folder ``root/al-projects/<name>``.
    """
    from unified_framework.active_learning.training import RoundConfig
    from unified_framework.data import CLASS_NAMES, make_implant_phantom
    from unified_framework.errors import InputError
    from unified_framework.io import write_volume

    if not name or "/" in name or name.startswith("."):
        raise InputError(f"project name {name!r}: expected a plain folder name", field="name")
    data = root / PROJECTS / f".{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    shape = (max(side // 2, 8), side, side)
    volumes = []
    for n, volume_seed in enumerate((seed, seed + 1, seed + 7)):
        image, labels = make_implant_phantom(shape, seed=volume_seed)
        write_volume(data / f"volume{n}.tif", image)
        write_volume(data / f"volume{n}_labels.tif", labels)
        volumes.append((data / f"volume{n}.tif", data / f"volume{n}_labels.tif"))
    project = Project.create(
        root / PROJECTS / name,
        [volumes[0][0], volumes[1][0]],
        CLASS_NAMES,
        config=RoundConfig(steps=100, input_size=32, batch_size=4),
        held_out=[volumes[2]],
    )
    return project.folder


def grey(image: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """A slice image ``(channels, rows, cols)`` or ``(rows, cols)`` as uint8 grey (first channel)."""
    plane = np.asarray(image, np.float32)
    plane = plane[0] if plane.ndim == 3 else plane
    low, high = window or (float(np.percentile(plane, 1)), float(np.percentile(plane, 99)))
    scaled = (plane - low) / max(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def overlay(
    grey_image: np.ndarray, labels: np.ndarray | None, alpha: float, classes: int
) -> np.ndarray:
    """RGB of a grey slice with labels blended in class colours (unlabelled pixels stay grey)."""
    out = np.repeat(grey_image[..., None], 3, axis=2).astype(np.float32)
    if labels is not None and alpha > 0:
        for c in range(classes):
            mask = labels == c
            out[mask] = (1 - alpha) * out[mask] + alpha * rgb(colour(c))
    return out.astype(np.uint8)


def heat(values: np.ndarray) -> np.ndarray:
    """RGB of values in 0..1 (dark = certain, bright yellow = uncertain), matplotlib's inferno."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def scale_for(shape: Sequence[int], target: int = 512) -> int:
    """Integer zoom so the longer side of a slice is about ``target`` screen pixels."""
    return max(1, target // max(int(shape[0]), int(shape[1])))


def rasterize_strokes(drawing: dict | None, height: int, width: int) -> np.ndarray | None:
    """RGBA ``(height, width, 4)`` of the free-drawn paths of a Fabric.js drawing (None: no path).

    Each path is drawn as a polyline through its points with the stroke's width and
    round joins and ends, in the stroke's colour; later strokes cover earlier ones.

    Examples
    --------
    >>> drawing = {"objects": [{"type": "path", "stroke": "#ff0000", "strokeWidth": 2,
    ...            "path": [["M", 1, 1], ["Q", 1, 1, 5, 1], ["L", 5, 1]]}]}
    >>> image = rasterize_strokes(drawing, 4, 8)
    >>> image[1, 1:6, 0].tolist(), int(image[3, 1, 3])
    ([255, 255, 255, 255, 255], 0)
    """
    from PIL import Image, ImageDraw

    paths = [
        o for o in (drawing or {}).get("objects", []) if str(o.get("type", "")).lower() == "path"
    ]
    if not paths:
        return None
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for path in paths:
        points = [
            (float(command[-2]), float(command[-1]))
            for command in path.get("path", [])
            if len(command) >= 3
        ]
        if not points:
            continue
        fill = (*[int(v) for v in rgb(str(path.get("stroke", "#000000")))], 255)
        stroke = max(int(round(float(path.get("strokeWidth", 1)))), 1)
        if len(points) > 1:
            draw.line(points, fill=fill, width=stroke, joint="curve")
        radius = stroke / 2
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    return np.asarray(image)


def labels_from_canvas(
    strokes: np.ndarray | None, base: np.ndarray, classes: int, scale: int
) -> np.ndarray:
    """Labels of a slice: ``base`` with the painted strokes applied.

    Parameters
    ----------
    strokes : numpy.ndarray or None
        The canvas' RGBA pixels ``(rows * scale, cols * scale, 4)`` (transparent where
        nothing was painted); None: nothing painted.
    base : numpy.ndarray
        ``(rows, cols)`` uint8 labels under the strokes (the proposal, earlier labels
        or :data:`IGNORE`).
    classes : int
    scale : int
        The canvas' zoom.

    Returns
    -------
    numpy.ndarray
        uint8 ``(rows, cols)``: where strokes cover at least a quarter of a pixel's
        ``scale x scale`` screen block, the class whose colour is nearest their mean
        colour there; elsewhere ``base``.

    Examples
    --------
    >>> canvas = np.zeros((4, 4, 4), np.uint8)
    >>> canvas[:2, :2] = [*rgb(colour(2)), 255]
    >>> labels_from_canvas(canvas, np.full((2, 2), 255, np.uint8), 3, 2).tolist()
    [[2, 255], [255, 255]]
    """
    labels = np.array(base, np.uint8, copy=True)
    if strokes is None:
        return labels
    rows, cols = labels.shape
    blocks = np.zeros((rows * scale, cols * scale, 4), np.float32)
    strokes = np.asarray(strokes, np.float32)[: rows * scale, : cols * scale]
    blocks[: strokes.shape[0], : strokes.shape[1]] = strokes
    blocks = blocks.reshape(rows, scale, cols, scale, 4)
    opaque = blocks[..., 3] >= 128
    coverage = opaque.mean(axis=(1, 3))
    painted = coverage >= 0.25  # a quarter of the pixel's screen block under a stroke
    if not painted.any():
        return labels
    summed = (blocks[..., :3] * opaque[..., None]).sum(axis=(1, 3))
    mean_colour = summed[painted] / opaque.sum(axis=(1, 3))[painted][:, None]
    palette = np.stack([rgb(colour(c)) for c in range(classes)]).astype(np.float32)
    nearest = ((mean_colour[:, None, :] - palette[None]) ** 2).sum(-1).argmin(axis=1)
    labels[painted] = nearest.astype(np.uint8)
    return labels


def base_labels(project: Project, sid: Any, proposal: np.ndarray | None, use_proposal: bool):
    """What the strokes are painted over: saved labels, else the proposal, else unlabelled."""
    if sid.key in project.state["labelled"]:
        return project.labels(sid)
    if use_proposal and proposal is not None:
        return proposal
    return np.full(project.pool.slice_shape(sid), IGNORE, np.uint8)


def training_progress(project: Project) -> dict[str, Any] | None:
    """Progress of the current round's training from its metrics log (None before it starts).

    Returns
    -------
    dict or None
        ``{"step", "steps", "loss", "finished"}``.
    """
    model = project.next_model_path()
    log = model.with_name(model.name + ".metrics.jsonl")
    steps = project.config.steps
    if model.is_file() and any(r.get("model") == f"models/{model.name}" for r in project.rounds):
        return {"step": steps, "steps": steps, "loss": None, "finished": True}
    if not log.is_file():
        return None
    last = None
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            last = json.loads(line)
        except ValueError:
            continue  # the line being written
    if last is None:
        return None
    return {"step": int(last["step"]), "steps": steps, "loss": last.get("loss"), "finished": False}


def learning_curve(project: Project) -> list[dict[str, Any]]:
    """One row per trained round: labelled slices and held-out Dice per class."""
    rows = []
    for entry in project.rounds:
        if entry.get("labelled_count") and entry.get("dice"):
            rows.append(
                {
                    "labelled slices": entry["labelled_count"],
                    **{k: v for k, v in entry["dice"].items() if v is not None},
                }
            )
    return rows


def record_training_job(project: Project, job_id: str, record: str) -> None:
    """Remember the submitted training job in the project's state."""
    with project.locked() as state:
        state["training_job"] = {"id": str(job_id), "record": record}
