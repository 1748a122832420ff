"""Label transfer between a located section and its volume, both ways.

A :class:`SectionMap` is the whole chain from a section pixel to the volume: the
similarity transform of the match (section pixel ``p`` -> plane point ``q0``), then
the inverse of the deformable field (``q0`` on the virtual section's grid -> the
position ``q`` that the registration says it shows), then the plane (``q`` -> world
µm). With it

* :func:`labels_on_section` draws a volume segmentation (e.g. a SUN result) on the
  section: the labels are sampled (nearest) at the world position of every section
  pixel, giving a label image in section pixels;
* :func:`section_points` maps section annotations (a label image in section pixels,
  or polygons of ``[x, y]`` pixel vertices) to world and voxel positions in the volume.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .plane import Plane


@dataclass
class SectionMap:
    """Where each section pixel lies in the volume (see the module docstring).

    Parameters
    ----------
    plane : Plane
        The located plane; the virtual section is centred on ``plane.point``.
    rotation_deg, scale, translation_um :
        The in-plane similarity ``q0 = scale R p + t`` (see :mod:`.match`).
    section_shape : (int, int)
        Rows and columns of the section image.
    section_pixel : (float, float)
        Its pixel size (µm, rows, columns).
    virtual_shape : (int, int)
        Shape of the virtual section (the registration's grid).
    virtual_pixel : float
        Its pixel size (µm).
    field : numpy.ndarray ``(2, h, w)``, optional
        The deformable field (:mod:`.register`); None: the similarity only.

    Examples
    --------
    >>> m = SectionMap(Plane((0, 0, 0), (1, 0, 0)), 0.0, 1.0, (0.0, 0.0), (3, 3), (2.0, 2.0), (3, 3), 2.0)
    >>> m.world_of_pixels(np.array([[1.0, 2.0]])).tolist()   # row 1, column 2: 2 µm along +x
    [[0.0, 0.0, 2.0]]
    """

    plane: Plane
    rotation_deg: float
    scale: float
    translation_um: tuple[float, float]
    section_shape: tuple[int, int]
    section_pixel: tuple[float, float]
    virtual_shape: tuple[int, int]
    virtual_pixel: float
    field: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._inverse: np.ndarray | None = None

    @classmethod
    def from_match(
        cls,
        match: Any,
        section_shape: Sequence[int],
        section_pixel: Sequence[float],
        virtual_shape: Sequence[int],
        virtual_pixel: float,
        field: np.ndarray | None = None,
    ) -> SectionMap:
        """From a :class:`~.match.Match` (or its :meth:`to_dict`) and the registration's field."""
        if isinstance(match, dict):
            plane = Plane.from_dict(match["plane"])
            t = match["section_to_plane"]
            rotation, scale, translation = (
                t["rotation_deg"],
                t["scale"],
                tuple(t["translation_um"]),
            )
        else:
            plane, rotation, scale, translation = (
                match.plane,
                match.rotation_deg,
                match.scale,
                match.translation_um,
            )
        return cls(
            plane,
            float(rotation),
            float(scale),
            (float(translation[0]), float(translation[1])),
            (int(section_shape[0]), int(section_shape[1])),
            (float(section_pixel[0]), float(section_pixel[-1])),
            (int(virtual_shape[0]), int(virtual_shape[1])),
            float(virtual_pixel),
            field,
        )

    def plane_of_pixels(self, rows_cols: np.ndarray) -> np.ndarray:
        """Plane coordinates ``(..., 2)`` (µm from ``plane.point``, along v, u) of section pixels ``(..., 2)``."""
        rc = np.asarray(rows_cols, dtype=np.float64)
        sh, sw = self.section_shape
        p = np.stack(
            [
                (rc[..., 0] - (sh - 1) / 2) * self.section_pixel[0],
                (rc[..., 1] - (sw - 1) / 2) * self.section_pixel[1],
            ],
            axis=-1,
        )
        a = math.radians(self.rotation_deg)
        r = self.scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        q = p @ r.T + np.asarray(self.translation_um)
        if self.field is None:
            return q
        from scipy import ndimage

        from .register import invert2d

        if self._inverse is None:
            self._inverse = invert2d(self.field, self.virtual_pixel)
        h, w = self.virtual_shape
        index = [
            q[..., 0] / self.virtual_pixel + (h - 1) / 2,
            q[..., 1] / self.virtual_pixel + (w - 1) / 2,
        ]
        shift = np.stack(
            [
                ndimage.map_coordinates(self._inverse[c], index, order=1, mode="nearest")
                for c in range(2)
            ],
            axis=-1,
        )
        return q + shift

    def section_pixels_of_virtual(self) -> tuple[np.ndarray, np.ndarray]:
        """Section (row, column) shown at each virtual-section pixel by the similarity alone."""
        h, w = self.virtual_shape
        qv, qu = np.meshgrid(
            (np.arange(h) - (h - 1) / 2) * self.virtual_pixel,
            (np.arange(w) - (w - 1) / 2) * self.virtual_pixel,
            indexing="ij",
        )
        a = math.radians(self.rotation_deg)
        dv, du = qv - self.translation_um[0], qu - self.translation_um[1]
        pv = (math.cos(a) * dv + math.sin(a) * du) / self.scale
        pu = (-math.sin(a) * dv + math.cos(a) * du) / self.scale
        sh, sw = self.section_shape
        return pv / self.section_pixel[0] + (sh - 1) / 2, pu / self.section_pixel[1] + (sw - 1) / 2

    def world_of_pixels(self, rows_cols: np.ndarray) -> np.ndarray:
        """World positions ``(..., 3)`` (µm, z y x) shown by section pixels ``(..., 2)`` (row, column)."""
        return self.plane.world(self.plane_of_pixels(rows_cols))

    def world_grid(self) -> np.ndarray:
        """World positions ``(rows, cols, 3)`` of every section pixel."""
        sh, sw = self.section_shape
        rc = np.stack(np.meshgrid(np.arange(sh), np.arange(sw), indexing="ij"), axis=-1)
        return self.world_of_pixels(rc)


def labels_on_section(
    labels: Any, section_map: SectionMap, device: str | None = None
) -> np.ndarray:
    """The label volume sampled (nearest) at every section pixel: a label image in section pixels.

    Parameters
    ----------
    labels : Volume
        Integer label volume with its world geometry (e.g. a SUN segmentation of the
        scan); in memory or lazy (only the chunks the section crosses are read).
    section_map : SectionMap
        Where each section pixel lies.

    Returns
    -------
    numpy.ndarray ``(rows, cols)``
        The labels' dtype; 0 where the pixel falls outside the volume.

    Examples
    --------
    >>> from unified_framework.io import Volume
    >>> vol = Volume(np.arange(27, dtype=np.uint8).reshape(3, 3, 3))
    >>> m = SectionMap(Plane((1, 1, 1), (1, 0, 0)), 0.0, 1.0, (0.0, 0.0), (3, 3), (1.0, 1.0), (3, 3), 1.0)
    >>> labels_on_section(vol, m)[1].tolist()
    [12, 13, 14]
    """
    from .sampling import sample_points

    data = labels.data
    if np.dtype(data.dtype).kind not in "uib":
        raise InputError(
            f"{labels.path or 'labels'}: dtype {data.dtype}; expected an integer label volume"
        )
    values, inside = sample_points(labels, section_map.world_grid(), order=0, device=device)
    return np.where(inside, np.rint(values), 0).astype(data.dtype)


def read_annotations(path: str | Path, shape: Sequence[int]) -> np.ndarray:
    """Section annotations as a label image ``shape`` in section pixels.

    Parameters
    ----------
    path : path-like
        A label image (any 2D format :func:`~unified_framework.io.read_volume` reads;
        integer values, 0 = not annotated) or a JSON file of polygons: a list of
        ``{"label": int, "points": [[x, y], ...]}`` (pixels, x = column), or a
        GeoJSON-like ``{"features": [{"properties": {"label": int}, "geometry":
        {"type": "Polygon", "coordinates": [[[x, y], ...]]}}]}``. Later polygons paint
        over earlier ones.
    shape : (int, int)
        The section's rows and columns.

    Examples
    --------
    >>> import json
    >>> _ = open("p.json", "w").write(json.dumps([{"label": 2, "points": [[0, 0], [3, 0], [3, 3], [0, 3]]}]))  # doctest: +SKIP
    >>> read_annotations("p.json", (5, 5)).max()  # doctest: +SKIP
    2
    """
    path = Path(path)
    if path.suffix.lower() in (".json", ".geojson"):
        return _rasterise(path, (int(shape[0]), int(shape[1])))
    from ..io import read_volume

    image = read_volume(path, expect_ndim=2)
    data = np.asarray(image.data)
    if image.axes == "yxc" or data.dtype.kind not in "uib":
        raise InputError(
            f"{path}: a {data.dtype} {'colour ' if image.axes == 'yxc' else ''}image; expected an integer label image (0 = not annotated)"
        )
    if data.shape != tuple(shape):
        raise InputError(
            f"{path}: shape {data.shape}; expected the section's shape {tuple(shape)} (labels in section pixels)"
        )
    return data


def _rasterise(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from skimage.draw import polygon

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from None
    items = data.get("features", []) if isinstance(data, dict) else data
    out = np.zeros(shape, dtype=np.uint16)
    if not isinstance(items, list) or not items:
        raise InputError(
            f"{path}: no polygons; expected a list of {{'label': int, 'points': [[x, y], ...]}}"
        )
    for k, item in enumerate(items):
        try:
            if "geometry" in item:
                label = int(item.get("properties", {}).get("label", k + 1))
                rings = item["geometry"]["coordinates"]
                points = np.asarray(rings[0], dtype=np.float64)
            else:
                label = int(item["label"])
                points = np.asarray(item["points"], dtype=np.float64)
        except (KeyError, TypeError, ValueError, IndexError):
            raise InputError(
                f"{path}: polygon {k + 1} is not {{'label': int, 'points': [[x, y], ...]}}"
            ) from None
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise InputError(
                f"{path}: polygon {k + 1} has {len(points)} vertices; expected at least 3 [x, y] pairs"
            )
        if not 0 < label < 65536:
            raise InputError(f"{path}: polygon {k + 1} has label {label}; expected 1..65535")
        rr, cc = polygon(points[:, 1], points[:, 0], shape)
        out[rr, cc] = label
    return out


def section_points(
    annotations: np.ndarray, section_map: SectionMap, volume: Any, stride: int = 1
) -> dict[str, np.ndarray]:
    """World and voxel positions of the annotated section pixels.

    Parameters
    ----------
    annotations : numpy.ndarray ``(rows, cols)``
        Label image in section pixels (0 = not annotated), e.g. :func:`read_annotations`.
    section_map : SectionMap
        Where each section pixel lies.
    volume : Volume
        The volume (its world geometry gives the voxel indices).
    stride : int
        Keep every ``stride``-th pixel along rows and columns (large annotations).

    Returns
    -------
    dict of numpy.ndarray
        ``label`` (n,), ``row``/``col`` (n,) section pixels, ``world_um`` (n, 3) and
        ``voxel`` (n, 3) fractional voxel indices ``(z, y, x)``, ``inside`` (n,) bool.

    Examples
    --------
    >>> from unified_framework.io import Volume
    >>> m = SectionMap(Plane((1, 1, 1), (1, 0, 0)), 0.0, 1.0, (0.0, 0.0), (3, 3), (1.0, 1.0), (3, 3), 1.0)
    >>> ann = np.zeros((3, 3), np.uint8); ann[0, 0] = 5
    >>> section_points(ann, m, Volume(np.zeros((3, 3, 3))))["voxel"].tolist()
    [[1.0, 0.0, 0.0]]
    """
    annotations = np.asarray(annotations)
    if annotations.shape != tuple(section_map.section_shape):
        raise InputError(
            f"annotations: shape {annotations.shape}; expected the section's {section_map.section_shape}"
        )
    mask = np.zeros(annotations.shape, bool)
    mask[:: max(1, stride), :: max(1, stride)] = True
    rows, cols = np.nonzero((annotations != 0) & mask)
    world = section_map.world_of_pixels(np.stack([rows, cols], axis=-1).astype(np.float64))
    index = np.c_[world, np.ones(len(world))] @ np.linalg.inv(volume.affine).T
    voxel = index[:, :3]
    shape = np.asarray(volume.spatial_shape[:3])
    inside = np.all((voxel >= -0.5) & (voxel <= shape - 0.5), axis=1)
    return {
        "label": annotations[rows, cols],
        "row": rows,
        "col": cols,
        "world_um": world,
        "voxel": voxel,
        "inside": inside,
    }


def sparse_label_volume(points: dict[str, np.ndarray], shape: Sequence[int]) -> np.ndarray:
    """A label volume of ``shape`` holding each mapped point's label at its nearest voxel (0 elsewhere).

    Examples
    --------
    >>> pts = {"label": np.array([3]), "voxel": np.array([[0.2, 1.0, 0.9]]), "inside": np.array([True])}
    >>> int(sparse_label_volume(pts, (2, 2, 2))[0, 1, 1])
    3
    """
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.asarray(points["label"]).dtype)
    keep = np.asarray(points["inside"], bool)
    index = np.clip(np.rint(points["voxel"][keep]).astype(np.int64), 0, np.asarray(shape) - 1)
    out[tuple(index.T)] = points["label"][keep]
    return out


def points_csv(points: dict[str, np.ndarray]) -> str:
    """CSV text: ``label,row,col,world_z_um,world_y_um,world_x_um,voxel_z,voxel_y,voxel_x,inside``.

    Examples
    --------
    >>> pts = {"label": np.array([1]), "row": np.array([0]), "col": np.array([2]),
    ...        "world_um": np.zeros((1, 3)), "voxel": np.ones((1, 3)), "inside": np.array([True])}
    >>> points_csv(pts).splitlines()[1]
    '1,0,2,0.000,0.000,0.000,1.000,1.000,1.000,1'
    """
    lines = ["label,row,col,world_z_um,world_y_um,world_x_um,voxel_z,voxel_y,voxel_x,inside"]
    for i in range(len(points["label"])):
        w, v = points["world_um"][i], points["voxel"][i]
        lines.append(
            f"{int(points['label'][i])},{int(points['row'][i])},{int(points['col'][i])},"
            f"{w[0]:.3f},{w[1]:.3f},{w[2]:.3f},{v[0]:.3f},{v[1]:.3f},{v[2]:.3f},{int(points['inside'][i])}"
        )
    return "\n".join(lines) + "\n"


#: Label colours of overlays (label k uses row k % len); 0 stays transparent.
LABEL_COLOURS = [
    (0, 0, 0),
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
]


def label_overlay(image: Any, labels: Any, alpha: float = 0.45) -> Any:
    """``image`` (grey or RGB) with ``labels`` painted over it (uint8 RGB).

    Examples
    --------
    >>> label_overlay(np.zeros((1, 2), np.uint8), np.array([[0, 1]]))[0].tolist()
    [[0, 0, 0], [104, 72, 0]]
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        lo, hi = np.percentile(image, [1, 99])
        image = np.repeat(
            (np.clip((image - lo) / max(hi - lo, 1e-9), 0, 1) * 255)[..., None], 3, axis=-1
        )
    colours = np.asarray(LABEL_COLOURS, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    paint = colours[labels % len(colours)]
    weight = np.where(labels > 0, alpha, 0.0)[..., None]
    return np.clip((1 - weight) * image[..., :3] + weight * paint, 0, 255).astype(np.uint8)
