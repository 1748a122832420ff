"""Data logic of the Virtual histology page: find match results, blend and checkerboard images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components import paths
from unified_framework.errors import InputError

#: What ``mdlma histology match --out DIR`` writes (the page lists folders holding all of it).
MATCH_FILES = ("match.json", "virtual_section.tif", "section_on_virtual.tif")


def find_matches(root: Path) -> list[Path]:
    """Folders below ``root`` (up to 4 levels) holding a complete ``mdlma histology match`` result."""
    reports = paths.walk_files(root, lambda p: p.name == "match.json" and p.is_file(), max_depth=4)
    return sorted(r.parent for r in reports if all((r.parent / f).is_file() for f in MATCH_FILES))


def load_match(folder: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """The report, the virtual section scaled to 0..1 and the mapped section as grey 0..1 (stain dark = 1)."""
    from unified_framework.image import to_grey
    from unified_framework.io import read_volume

    try:
        report = json.loads((folder / "match.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / 'match.json'}: not a readable match report ({exc})") from None
    virtual = np.asarray(read_volume(folder / "virtual_section.tif").data, dtype=np.float32)
    lo, hi = np.percentile(virtual, [1, 99])
    virtual = np.clip((virtual - lo) / max(hi - lo, 1e-9), 0, 1)
    section = read_volume(folder / "section_on_virtual.tif")
    grey = np.asarray(
        to_grey(section).data if section.axes == "yxc" else section.data, dtype=np.float32
    )
    grey = 1 - np.clip(grey / max(float(grey.max()), 1e-9), 0, 1)
    return report, virtual, grey


def blend(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) a + alpha b``.

    Examples
    --------
    >>> blend(np.zeros(2), np.ones(2), 0.25).tolist()
    [0.25, 0.25]
    """
    return (1 - alpha) * a + alpha * b


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int) -> np.ndarray:
    """``a`` and ``b`` in alternating squares, ``tiles`` squares along the longer side.

    Examples
    --------
    >>> checkerboard(np.zeros((2, 2)), np.ones((2, 2)), 2).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    size = max(1, int(np.ceil(max(a.shape) / max(1, tiles))))
    rows, cols = np.indices(a.shape)
    return np.where(((rows // size + cols // size) % 2).astype(bool), b, a)


def load_registered(folder: Path) -> np.ndarray | None:
    """The section after the deformable registration as grey 0..1 (stain dark = 1), or None."""
    from unified_framework.image import to_grey
    from unified_framework.io import read_volume

    path = folder / "section_warped.tif"
    if not path.is_file():
        return None
    warped = read_volume(path)
    grey = np.asarray(
        to_grey(warped).data if warped.axes == "yxc" else warped.data, dtype=np.float32
    )
    return 1 - np.clip(grey / max(float(grey.max()), 1e-9), 0, 1)


def load_labels(folder: Path) -> dict[str, np.ndarray]:
    """Transferred labels present in a result folder: ``overlay`` (RGB on the section), ``virtual`` (labels on the virtual grid)."""
    from PIL import Image

    from unified_framework.io import read_volume

    found: dict[str, np.ndarray] = {}
    if (folder / "labels_overlay.png").is_file():
        found["overlay"] = np.asarray(Image.open(folder / "labels_overlay.png").convert("RGB"))
    if (folder / "labels_on_virtual.tif").is_file():
        found["virtual"] = np.asarray(read_volume(folder / "labels_on_virtual.tif").data)
    return found


def resolve(path: str, folder: Path, root: Path) -> Path:
    """A path from a report: as it is when absolute, else next to the result or below the home."""
    given = Path(path)
    if given.is_absolute():
        return given
    for base in (folder.parent, root, folder):
        if (base / given).exists():
            return (base / given).resolve()
    return (root / given).resolve()


def volume_box(report: dict, folder: Path, root: Path) -> np.ndarray:
    """World corners (8, 3) of the volume: from its file's geometry, else from shape and spacing around its centre."""
    from unified_framework.histology.plane import volume_corners
    from unified_framework.io import read_volume

    try:
        volume = read_volume(resolve(report["volume"]["path"], folder, root), lazy=True)
        if tuple(volume.shape) == tuple(report["volume"]["shape"]):
            volume.spacing = tuple(report["volume"]["spacing_um"])
            return volume_corners(volume)
    except Exception:  # noqa: BLE001 - the volume moved or is unreadable here: draw the box from the report
        pass
    extent = np.asarray(report["volume"]["shape"], float) * np.asarray(
        report["volume"]["spacing_um"], float
    )
    centre = np.asarray(report["volume_centre_um"], float)
    unit = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float) - 0.5
    return centre + unit * extent


def plane_figure(report: dict, corners: np.ndarray, slices: dict | None = None):
    """Plotly 3D view: the volume's box, the located section as a plane patch, optional orthoslices.

    ``slices``: ``{"image": (z, y, x) array, "corners": (8, 3)}`` of a binned volume; its three
    central orthogonal slices are drawn as grey surfaces.
    """
    import plotly.graph_objects as go

    from unified_framework.histology import Plane

    fig = go.Figure()
    # World (z, y, x) is drawn as plot (x, y, z) = (x, y, z) so the screw axis points up.
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1]
    xs, ys, zs = [], [], []
    for i, j in edges:
        for k in (i, j):
            zs.append(corners[k, 0])
            ys.append(corners[k, 1])
            xs.append(corners[k, 2])
        xs.append(None)
        ys.append(None)
        zs.append(None)
    fig.add_trace(
        go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line={"color": "#555"}, name="volume")
    )
    if slices is not None:
        image, box = slices["image"], slices["corners"]
        lo, hi = box.min(0), box.max(0)
        axes = [np.linspace(lo[a], hi[a], image.shape[a]) for a in range(3)]
        mid = [s // 2 for s in image.shape]
        grey = dict(colorscale="Greys_r", showscale=False, opacity=0.6)
        zz, yy, xx = np.meshgrid(*axes, indexing="ij")
        fig.add_trace(
            go.Surface(
                x=xx[mid[0]],
                y=yy[mid[0]],
                z=zz[mid[0]],
                surfacecolor=image[mid[0]],
                name="axial",
                **grey,
            )
        )
        fig.add_trace(
            go.Surface(
                x=xx[:, mid[1]],
                y=yy[:, mid[1]],
                z=zz[:, mid[1]],
                surfacecolor=image[:, mid[1]],
                name="coronal",
                **grey,
            )
        )
    best = report["best"]
    plane = Plane.from_dict(best["plane"])
    h, w = report.get("virtual_section", {}).get("shape", [0, 0]) or [0, 0]
    pixel = report.get("virtual_section", {}).get("pixel_size_um", 1.0)
    if not h:
        span = float(np.linalg.norm(corners.max(0) - corners.min(0))) / 2
        h = w = span / pixel
    half_v, half_u = h * pixel / 2, w * pixel / 2
    patch = np.array(
        [plane.world((a * half_v, b * half_u)) for a, b in ((-1, -1), (-1, 1), (1, 1), (1, -1))]
    )
    fig.add_trace(
        go.Mesh3d(
            x=patch[:, 2],
            y=patch[:, 1],
            z=patch[:, 0],
            i=[0, 0],
            j=[1, 2],
            k=[2, 3],
            color="#d6336c",
            opacity=0.55,
            name="located section",
        )
    )
    normal_tip = plane.point + plane.normal * 0.25 * float(np.ptp(corners[:, 0]))
    fig.add_trace(
        go.Scatter3d(
            x=[plane.point[2], normal_tip[2]],
            y=[plane.point[1], normal_tip[1]],
            z=[plane.point[0], normal_tip[0]],
            mode="lines+markers",
            line={"color": "#d6336c", "width": 5},
            marker={"size": 3},
            name="normal",
        )
    )
    fig.update_layout(
        title={"text": "located plane in the volume"},
        scene={
            "aspectmode": "data",
            "xaxis_title": "x (µm)",
            "yaxis_title": "y (µm)",
            "zaxis_title": "z (µm)",
        },
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        height=480,
    )
    return fig


def binned_volume(report: dict, folder: Path, root: Path, side: int = 48) -> dict | None:
    """The volume binned to at most ``side`` voxels per side, with its box, for orthoslices (None if unreadable)."""
    from unified_framework.histology.match import _binned
    from unified_framework.histology.plane import volume_corners
    from unified_framework.io import read_volume

    try:
        volume = read_volume(
            resolve(report["volume"]["path"], folder, root), lazy=True, expect_ndim=3, grey=True
        )
    except Exception:  # noqa: BLE001 - no orthoslices when the volume is not reachable from here
        return None
    volume.spacing = tuple(report["volume"]["spacing_um"])
    small = _binned(volume, side)
    return {"image": np.asarray(small.data), "corners": volume_corners(volume)}


def rerun_values(
    report: dict,
    folder: Path,
    root: Path,
    cone: float,
    step: float,
    candidates: int,
    register: str,
) -> dict:
    """Values of the ``histology-match`` template for a narrower search around the current result.

    The cone is centred on the located normal (any direction, so it goes as ``--axis`` in
    ``extra_args`` with ``cutting_axis: none``); the output goes next to the result.

    Examples
    --------
    >>> rep = {"best": {"plane": {"normal": [1.0, 0.0, 0.0]}}, "volume": {"path": "/v.zarr"}, "section": {"path": "/s.tif"}}
    >>> rerun_values(rep, Path("/home/m"), Path("/home"), 5, 1, 3, "bspline")["extra_args"]
    '--axis 1 0 0 --cone 5 --step 1 --register bspline'
    """
    n = report["best"]["plane"]["normal"]
    axis = " ".join(format(float(c), ".6g") for c in n)
    out = folder.parent / f"{folder.name}-narrow"
    k = 2
    while out.exists():
        out = folder.parent / f"{folder.name}-narrow{k}"
        k += 1
    return {
        "volume": str(resolve(report["volume"]["path"], folder, root)),
        "section": str(resolve(report["section"]["path"], folder, root)),
        "out": str(out),
        "cutting_axis": "none",
        "candidates": int(candidates),
        "extra_args": f"--axis {axis} --cone {cone:g} --step {step:g} --register {register}",
        "workdir": str(folder.parent),
    }
