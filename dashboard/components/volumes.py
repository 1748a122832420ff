"""Volume outputs of jobs: finding them, slicing, label overlays and a small 3D view.

All functions take plain or dask arrays in ``(z, y, x)`` order and return numpy arrays
or plotly figures; only the slices and a strided copy for 3D are read from disk, so
large lazy volumes stay cheap to browse.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from .paths import walk_files

#: Suffixes of files (or folders, ``.zarr``) that may hold a volume.
VOLUME_SUFFIXES = (".tif", ".tiff", ".h5", ".hdf5", ".nxs", ".nii", ".nii.gz", ".zarr")
#: Role of a volume guessed from words in its file name, first match wins.
ROLE_HINTS = (
    ("ground_truth", re.compile(r"(^|[^a-z])(gt|ground.?truth|truth|reference)([^a-z]|$)", re.I)),
    ("uncertainty", re.compile(r"uncert|entropy|variance|std", re.I)),
    ("labels", re.compile(r"label|seg|pred|mask|class", re.I)),
    ("image", re.compile(r"image|input|volume|scan|recon|raw|tomo", re.I)),
)
#: Distinct colours for labels 1..; label 0 (background) is never painted.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
)
AXES = ("z", "y", "x")


def label_colour(label: int) -> tuple[int, int, int]:
    """RGB colour of a (non-zero) label."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def volume_suffix(path: Path) -> str | None:
    """The volume suffix of ``path`` (``.nii.gz`` counts as one), or ``None``."""
    name = path.name.lower()
    return next(
        (s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None
    )


def find_volumes(folder: Path, max_depth: int = 3, limit: int = 200) -> list[Path]:
    """Volume files and ``.zarr`` folders below ``folder`` (see :func:`.paths.walk_files`)."""
    return walk_files(folder, lambda p: volume_suffix(p) is not None, max_depth, limit)


def guess_role(path: Path) -> str:
    """``"ground_truth"``, ``"uncertainty"``, ``"labels"`` or ``"image"`` from the file name."""
    name = path.name
    for role, pattern in ROLE_HINTS:
        if pattern.search(name):
            return role
    return "image"


def assign_roles(paths: Sequence[Path]) -> dict[str, Path | None]:
    """Pick one file per role (the first whose name suggests it)."""
    roles: dict[str, Path | None] = {
        "image": None,
        "labels": None,
        "uncertainty": None,
        "ground_truth": None,
    }
    for path in paths:
        role = guess_role(path)
        if roles[role] is None:
            roles[role] = path
    return roles


def orthogonal_slice(data, axis: int, index: int) -> np.ndarray:
    """Read the 2D slice ``index`` across ``axis`` (0=z, 1=y, 2=x) as a numpy array."""
    if data.ndim == 2:
        return np.asarray(data)
    index = int(np.clip(index, 0, data.shape[axis] - 1))
    selector = [slice(None)] * data.ndim
    selector[axis] = index
    return np.asarray(data[tuple(selector)])


def strided(data, max_voxels: int) -> tuple[np.ndarray, int]:
    """A copy of ``data`` subsampled by a common integer step to at most ``max_voxels``.

    Returns
    -------
    (numpy.ndarray, int)
        The subsampled array and the step used.
    """
    size = int(np.prod(data.shape))
    step = max(1, int(np.ceil((size / max_voxels) ** (1 / data.ndim))))
    while int(np.prod([-(-n // step) for n in data.shape])) > max_voxels:
        step += 1
    return np.asarray(data[tuple(slice(None, None, step) for _ in data.shape)]), step


def display_window(
    data, max_voxels: int = 2_000_000, percentiles: tuple[float, float] = (0.5, 99.5)
) -> tuple[float, float]:
    """Grey-value window from percentiles of a subsample (robust to outliers)."""
    sample, _ = strided(data, max_voxels)
    sample = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample
    if sample.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(sample, percentiles)
    return (float(low), float(high) if high > low else float(low) + 1.0)


def to_grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map grey values to uint8 within ``window`` (NaN becomes black)."""
    low, high = window
    scaled = (np.asarray(image, dtype=np.float32) - low) / (high - low)
    return (np.nan_to_num(np.clip(scaled, 0, 1)) * 255).astype(np.uint8)


def overlay(
    grey: np.ndarray, labels: np.ndarray | None, opacity: float, visible: Iterable[int]
) -> np.ndarray:
    """Blend label colours onto a grey slice.

    Parameters
    ----------
    grey : numpy.ndarray of uint8
        2D grey image.
    labels : numpy.ndarray or None
        2D label slice of the same shape.
    opacity : float
        0 (labels invisible) to 1 (labels opaque).
    visible : iterable of int
        Labels to paint; others show the grey image.

    Returns
    -------
    numpy.ndarray of uint8, shape (H, W, 3)
    """
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if labels is not None and opacity > 0:
        if labels.shape != grey.shape:
            raise ValueError(f"label slice {labels.shape} does not match image slice {grey.shape}")
        for label in visible:
            if label == 0:
                continue
            where = labels == label
            if where.any():
                rgb[where] = (1 - opacity) * rgb[where] + opacity * np.asarray(
                    label_colour(label), np.float32
                )
    return rgb.round().astype(np.uint8)


def labels_rgb(labels: np.ndarray, visible: Iterable[int]) -> np.ndarray:
    """Paint a label slice on black (for showing labels without an image)."""
    return overlay(np.zeros(labels.shape, np.uint8), labels, 1.0, visible)


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an RGB array as a PNG ``data:`` URI (compact to send to the browser)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_figure(rgb: np.ndarray, title: str, aspect: float = 1.0, height: int = 420) -> go.Figure:
    """Zoomable plotly figure of an RGB slice; ``aspect`` is row spacing / column spacing."""
    figure = go.Figure(go.Image(source=png_data_uri(rgb)))
    figure.update_layout(title=title, height=height, margin=dict(l=0, r=0, t=30, b=0))
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False, scaleanchor="x", scaleratio=aspect)
    return figure


def heatmap_figure(
    values: np.ndarray,
    title: str,
    aspect: float = 1.0,
    height: int = 420,
    colorscale: str = "Inferno",
) -> go.Figure:
    """Plotly heatmap of a 2D float slice (e.g. an uncertainty map) with a colour bar."""
    figure = go.Figure(go.Heatmap(z=np.asarray(values, dtype=np.float32), colorscale=colorscale))
    figure.update_layout(title=title, height=height, margin=dict(l=0, r=0, t=30, b=0))
    figure.update_yaxes(
        autorange="reversed", scaleanchor="x", scaleratio=aspect, showticklabels=False
    )
    figure.update_xaxes(showticklabels=False)
    return figure


def surface_points(labels: np.ndarray, label: int) -> np.ndarray:
    """Coordinates ``(n, 3)`` of the voxels of ``label`` that touch another label."""
    from scipy import ndimage

    mask = labels == label
    inner = ndimage.binary_erosion(mask, border_value=0)
    return np.argwhere(mask & ~inner)


def scatter_3d(
    labels,
    visible: Iterable[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    max_voxels: int = 64**3,
    max_points: int = 30_000,
    names: dict[int, str] | None = None,
) -> go.Figure:
    """Downsampled 3D view: the surface voxels of each visible label as coloured points.

    Parameters
    ----------
    labels : array_like
        3D label volume (numpy or dask).
    visible : iterable of int
        Labels to draw (0 is skipped).
    spacing : sequence of float
        Voxel size, so that anisotropic volumes keep their proportions.
    max_voxels : int
        The volume is subsampled by a common step to at most this many voxels first.
    max_points : int
        At most this many points per label are drawn (evenly thinned).
    names : dict, optional
        Legend name per label.
    """
    small, step = strided(labels, max_voxels)
    scale = np.asarray(spacing, dtype=float) * step
    figure = go.Figure()
    for label in visible:
        if label == 0:
            continue
        points = surface_points(small, label)
        if len(points) == 0:
            continue
        if len(points) > max_points:
            points = points[:: int(np.ceil(len(points) / max_points))]
        z, y, x = (points * scale).T
        colour = "rgb({},{},{})".format(*label_colour(label))
        figure.add_trace(
            go.Scatter3d(
                x=x,
                y=y,
                z=z,
                mode="markers",
                name=(names or {}).get(label, f"label {label}"),
                marker=dict(size=2, color=colour, opacity=0.6),
            )
        )
    figure.update_layout(
        height=480,
        margin=dict(l=0, r=0, t=30, b=0),
        title=f"3D (every {step}. voxel)",
        scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z"),
    )
    return figure


def slice_aspect(spacing: Sequence[float], axis: int) -> float:
    """Display aspect (row spacing / column spacing) of a slice across ``axis``."""
    rows, cols = [s for i, s in enumerate(spacing) if i != axis][-2:]
    return float(rows) / float(cols) if cols else 1.0
