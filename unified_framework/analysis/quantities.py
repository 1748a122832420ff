"""The degradation and osseointegration quantities of one label volume, in physical units.

:func:`quantify` measures, from a label volume with the roles of
:class:`~.roles.ClassRoles` and its voxel size (µm, ``(z, y, x)``, anisotropic
allowed):

* volumes of every class, the layer fraction ``V_layer / (V_res + V_layer)`` and BV/TV;
* with an initial implant geometry (a mask, or a cylinder fitted to the residual
  material): initial volume, degraded fraction, degradation depth and mean rate per day;
* the degradation layer's local thickness (mean, sd, median, max, histogram);
* BV/TV in concentric shells around the implant surface;
* bone-implant contact (BIC, % of the implant surface touching bone);
* surface areas (marching cubes), residual-material fragment count.

Every quantity is restricted to the region of interest: a mask and/or a band of
distances from the implant surface. The formulas and references are in
``docs/analysis.md``.

Memory: the work happens in the bounding box of the implant grown by the largest
distance needed; distances from the implant are computed slab by slab with a halo, so
that a 512³ volume needs a small multiple of the label volume.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .roles import ClassRoles, resolve_roles
from .thickness import local_thickness

UM3_PER_MM3 = 1e9
UM2_PER_MM2 = 1e6
DAYS_PER_YEAR = 365.25
#: z slices per slab of the counting and distance passes.
SLAB = 32


@dataclass
class AnalysisResult:
    """What :func:`quantify` measured.

    Attributes
    ----------
    values : dict
        Scalars by name, units in the name (``_mm3``, ``_mm2``, ``_um``, ``_percent``);
        ``None`` where a quantity is undefined (e.g. no initial geometry).
    shells : list of dict
        One row per shell: ``inner_um``, ``outer_um``, ``bone_mm3``, ``tissue_mm3``,
        ``bv_tv`` (``None`` for a shell without tissue in the region).
    histogram : dict
        Layer thickness histogram: ``edges_um`` and ``fraction`` (volume fractions).
    settings : dict
        Voxel size, roles, region, shell width, conventions: how it was measured.
    thickness_map : numpy.ndarray or None
        Local thickness of the degradation layer (µm, float32, 0 elsewhere) in
        ``map_box`` when ``keep_maps``.
    map_box : tuple of slice or None
        Where ``thickness_map`` lies in the label volume.
    """

    values: dict[str, Any]
    shells: list[dict[str, Any]]
    histogram: dict[str, list[float]]
    settings: dict[str, Any]
    thickness_map: np.ndarray | None = field(default=None, repr=False)
    map_box: tuple[slice, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the map)."""
        return {
            "values": self.values,
            "shells": self.shells,
            "thickness_histogram": self.histogram,
            "settings": self.settings,
        }

    def row(self) -> dict[str, Any]:
        """One flat row for a CSV table: the values and one ``bv_tv_<inner>_<outer>um`` per shell."""
        row = dict(self.values)
        for shell in self.shells:
            row[f"bv_tv_{shell['inner_um']:g}_{shell['outer_um']:g}um"] = shell["bv_tv"]
        return row

    def full_thickness_map(self, shape: Sequence[int]) -> np.ndarray:
        """The thickness map on the whole label grid (float32, 0 outside the layer)."""
        out = np.zeros(tuple(shape), np.float32)
        if self.thickness_map is not None and self.map_box is not None:
            out[self.map_box] = self.thickness_map
        return out


# --------------------------------------------------------------------------- helpers


def threads() -> int:
    """Threads for the distance transforms: ``OMP_NUM_THREADS`` (SLURM's share) or the cores."""
    import os

    try:
        wanted = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        wanted = 0
    return max(1, wanted or (os.cpu_count() or 1))


def parse_date(value: str | _dt.date | None, name: str) -> _dt.date | None:
    """A date from ``YYYY-MM-DD`` (or a :class:`datetime.date`); ``None`` passes through.

    Examples
    --------
    >>> parse_date("2024-03-01", "scan_date")
    datetime.date(2024, 3, 1)
    """
    if value is None or isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise InputError(f"{name}: {value!r} is not a date YYYY-MM-DD", field=name) from None


def elapsed_days(
    implantation_date: str | _dt.date | None = None,
    scan_date: str | _dt.date | None = None,
    days: float | None = None,
) -> float | None:
    """Days between implantation and scan, from the dates or given directly.

    Examples
    --------
    >>> elapsed_days("2024-01-01", "2024-01-29")
    28.0
    """
    if days is not None:
        if not (math.isfinite(days) and days > 0):
            raise InputError(f"days: {days!r} must be a positive number", field="days")
        return float(days)
    start = parse_date(implantation_date, "implantation_date")
    end = parse_date(scan_date, "scan_date")
    if start is None or end is None:
        return None
    span = (end - start).days
    if span <= 0:
        raise InputError(
            f"scan_date {end} is not after implantation_date {start}", field="scan_date"
        )
    return float(span)


def _check_labels(labels: Any, name: str) -> np.ndarray:
    from ..metrics.validation import as_label_array

    array = as_label_array(labels, name)
    if array.ndim != 3:
        raise InputError(f"{name}: expected a 3D label volume (z, y, x), got shape {array.shape}")
    return array


def _check_spacing(spacing: Sequence[float] | float | None) -> tuple[float, float, float]:
    from ..metrics.validation import as_spacing

    values = as_spacing(spacing, 3)
    return (float(values[0]), float(values[1]), float(values[2]))


def _check_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.shape != shape:
        raise InputError(f"{name}: shape {array.shape} does not match the labels {shape}")
    return array.astype(bool, copy=False) if array.dtype != bool else array


def _release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc's ``malloc_trim``).

    After large arrays are freed glibc raises its mmap threshold, so later medium-sized
    arrays come from the heap and their memory stays in the process (RSS) when freed;
    between the analysis steps it is returned. A no-op where glibc is not the allocator.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _slabs(n: int, size: int = SLAB):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _member(part: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``np.isin(part, values)``; by a lookup table for 8/16-bit unsigned labels (no int64 copy)."""
    if part.dtype.kind == "u" and part.dtype.itemsize <= 2:
        lut = np.zeros(1 << (8 * part.dtype.itemsize), bool)
        lut[[int(v) for v in values if 0 <= int(v) < lut.size]] = True
        return lut[part]
    return np.isin(part, values)


class _LabelMask:
    """``np.isin(labels, values)`` made slab by slab on demand: a bool mask without its own copy.

    Indexing with slices (``mask[zs]`` or ``mask[zs, ys, xs]``) returns the bool array of
    that part; :meth:`box` is the bounding box of the ``True`` voxels.
    """

    def __init__(self, labels: np.ndarray, values: Sequence[int]) -> None:
        self.labels = labels
        self.values = [int(v) for v in values]
        self.shape = labels.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        return _member(self.labels[key], self.values)

    def box(self) -> tuple[slice, ...] | None:
        return _bounding_box(self.labels, self.values)


def _mask_box(mask: np.ndarray | _LabelMask) -> tuple[slice, ...] | None:
    if isinstance(mask, _LabelMask):
        return mask.box()
    return _bounding_box(mask.view(np.uint8) if mask.dtype == bool else mask, [1])


def _bounding_box(labels: np.ndarray, values: Sequence[int]) -> tuple[slice, ...] | None:
    """Bounding box of the voxels holding any of ``values``, found slab by slab."""
    hits = [np.zeros(n, bool) for n in labels.shape]
    for zs in _slabs(labels.shape[0]):
        mask = _member(labels[zs], values)
        if not mask.any():
            continue
        hits[0][zs] |= mask.any(axis=(1, 2))
        hits[1] |= mask.any(axis=(0, 2))
        hits[2] |= mask.any(axis=(0, 1))
    box = []
    for hit in hits:
        idx = np.flatnonzero(hit)
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _grow(box: Sequence[slice], margin: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in zip(box, margin, shape)
    )


def _union(a: Sequence[slice], b: Sequence[slice]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _counts(labels: np.ndarray, roi: np.ndarray | None, length: int) -> np.ndarray:
    """Voxel count of each label value ``0..length-1`` inside ``roi`` (values beyond: last bin)."""
    counts = np.zeros(length + 1, np.int64)
    # About a million voxels per slab: bincount works on an int64 copy.
    per_slab = max(1, 2**20 // max(1, labels.shape[1] * labels.shape[2]))
    for zs in _slabs(labels.shape[0], per_slab):
        part = labels[zs]
        if roi is not None:
            part = part[roi[zs]]
        values = np.clip(part.reshape(-1).astype(np.int64), 0, length)
        counts += np.bincount(values, minlength=length + 1)
    return counts


@dataclass
class _Mesh:
    """A marching-cubes surface: triangle centroids (index coordinates), outward unit normals, areas (µm²)."""

    centroids: np.ndarray
    normals: np.ndarray
    areas: np.ndarray


def surface_mesh(
    mask: np.ndarray | _LabelMask,
    spacing: Sequence[float],
    offset: Sequence[int] = (0, 0, 0),
    chunk: int = 32,
) -> _Mesh:
    """Marching-cubes surface of a binary mask, smoothed by a Gaussian of one (smallest) voxel.

    The binary mask is blurred (sigma = the smallest voxel size, in physical units) and
    the 0.5 iso-surface taken with :func:`skimage.measure.marching_cubes`; on a binary
    mask directly, marching cubes overestimates smooth surfaces by 2-7 % (its facets
    follow the voxel steps), after the blur by less than 1 % for radii of 8 voxels and
    more. The mask is padded by repeating its border, so an object cut by the volume
    border gets no surface there (triangles outside the volume are dropped by the
    caller).

    Memory: the blur and marching cubes run on ``chunk`` z slices at a time with a
    halo of the blur's reach (plus one slice), so every chunk's blurred values, cubes
    and facets are exactly those of the whole mask; only one chunk's float32 copy is
    ever held.

    Parameters
    ----------
    mask : numpy.ndarray of bool
        Or a lazily evaluated mask of label values (``_LabelMask``).
    spacing : sequence of 3 float
    offset : sequence of 3 int
        Index of ``mask[0, 0, 0]`` in the full volume; centroids are returned in the
        full volume's index coordinates.
    chunk : int
        z slices of cubes per marching-cubes call.

    Examples
    --------
    >>> ball = np.zeros((24, 24, 24), bool)
    >>> z, y, x = np.ogrid[:24, :24, :24]
    >>> ball[(z - 11.5) ** 2 + (y - 11.5) ** 2 + (x - 11.5) ** 2 < 8 ** 2] = True
    >>> area = surface_mesh(ball, (1, 1, 1)).areas.sum()
    >>> bool(abs(area / (4 * np.pi * 64) - 1) < 0.05)
    True
    >>> bool(abs(surface_mesh(ball, (1, 1, 1), chunk=5).areas.sum() - area) < 1e-6 * area)
    True
    """
    from skimage import measure

    spacing_arr = np.asarray(spacing, float)
    empty = _Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.float32), np.zeros(0))
    crop = _mask_box(mask)
    if crop is None:
        return empty
    # Work on the mask's bounding box (plus 3 voxels for the blur) only.
    crop = _grow(crop, [3, 3, 3], mask.shape)
    offset = [o + c.start for o, c in zip(offset, crop)]
    sigma = float(spacing_arr.min()) / spacing_arr
    # scipy's Gaussian reaches int(4 sigma + 0.5) voxels; the orientation probe one more.
    reach = int(4.0 * float(sigma[0]) + 0.5) + 2
    # The padded array P (the crop with one repeated voxel on every side) has n_p slices;
    # P[i] is the crop's slice clip(i - 1).
    n_crop = crop[0].stop - crop[0].start
    n_p = n_crop + 2
    chunk = max(1, int(chunk))
    shift = np.asarray(offset, float) - 1.0
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for a in range(0, n_p - 1, chunk):
        b = min(a + chunk, n_p - 1)  # cubes between P slices a..b
        w0, w1 = max(0, a - reach), min(n_p, b + 1 + reach)
        rows = np.clip(np.arange(w0, w1) - 1, 0, n_crop - 1) + crop[0].start
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        block = mask[(slice(lo, hi), crop[1], crop[2])]
        window = np.pad(block[rows - lo].astype(np.float32), ((0, 0), (1, 1), (1, 1)), mode="edge")
        del block
        ndi.gaussian_filter(window, sigma, output=window, mode="nearest")
        part = window[a - w0 : b + 1 - w0]
        if part.max() <= 0.5 or part.min() >= 0.5:
            continue
        verts, faces, _, _ = measure.marching_cubes(part, 0.5, spacing=tuple(spacing_arr))
        verts[:, 0] += np.float32((a - w0) * spacing_arr[0])  # window frame
        tri = verts[faces]  # (n, 3, 3) in µm, window frame
        del verts, faces
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).astype(np.float64)
        areas = 0.5 * np.linalg.norm(cross, axis=1)
        keep = areas > 0
        tri, cross, areas = tri[keep], cross[keep], areas[keep]
        normals = cross / (2 * areas[:, None])
        centroids = tri.mean(axis=1, dtype=np.float64) / spacing_arr  # window index coordinates
        del tri, cross
        # Orient outwards: a point a little along the normal must lie outside.
        probe = centroids + 0.5 * normals * float(spacing_arr.min()) / spacing_arr
        inside = ndi.map_coordinates(window, probe.T, order=1, mode="nearest") > 0.5
        del probe, window, part
        normals[inside] *= -1
        centroids[:, 0] += w0
        centroids += shift
        parts.append((centroids, normals.astype(np.float32), areas.astype(np.float64)))
    if not parts:
        return empty
    return _Mesh(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


# --------------------------------------------------------------------------- initial geometry


def _sample_points(mask: np.ndarray, limit: int = 200_000) -> np.ndarray:
    """Indices of up to about ``limit`` voxels of ``mask`` (every k-th), slab by slab."""
    total = int(np.count_nonzero(mask))
    step = max(1, total // limit)
    parts = []
    taken = 0
    for zs in _slabs(mask.shape[0]):
        pts = np.argwhere(mask[zs])
        if pts.size == 0:
            continue
        # Continue the stride across slabs so the sample is even.
        first = (-taken) % step
        pts = pts[first::step]
        taken += int(np.count_nonzero(mask[zs]))
        pts[:, 0] += zs.start
        parts.append(pts)
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.intp)


def _projection_range(
    mask: np.ndarray | _LabelMask,
    axis: np.ndarray,
    centre: np.ndarray,
    spacing: np.ndarray,
    offset: Sequence[int],
) -> tuple[float, float]:
    """Smallest and largest position of ``mask``'s voxel centres along ``axis`` (exact, slab by slab)."""
    low, high = math.inf, -math.inf
    for zs in _slabs(mask.shape[0]):
        pts = np.argwhere(mask[zs])
        if pts.size == 0:
            continue
        pts[:, 0] += zs.start
        along = ((pts + np.asarray(offset)) * spacing - centre) @ axis
        low, high = min(low, float(along.min())), max(high, float(along.max()))
    return low, high


def fit_cylinder(
    residual: np.ndarray,
    spacing: Sequence[float],
    offset: Sequence[int] = (0, 0, 0),
    radius: float | None = None,
    extent_mask: np.ndarray | _LabelMask | None = None,
    extent_offset: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Fit the initial implant as a cylinder to the residual material.

    The axis runs through the centroid of the residual voxels along the one of their
    three principal directions whose enclosing cylinder (99th percentile radius times
    extent) is smallest. The radius is ``radius`` (the nominal implant radius, µm) or,
    when not given, the 99th percentile of the residual voxels' distances from the axis
    plus half a voxel: the least degraded places are taken to still reach the original
    surface. The cylinder spans the extent of ``extent_mask`` (default the residual)
    along the axis. At most about 200,000 voxels enter the fit (every k-th); the extent
    uses all.

    Parameters
    ----------
    residual : numpy.ndarray of bool
    spacing : sequence of 3 float
    offset : sequence of 3 int
        Index of ``residual[0, 0, 0]`` in the full volume.
    radius : float, optional
    extent_mask : numpy.ndarray of bool, optional
    extent_offset : sequence of 3 int, optional
        Index of ``extent_mask[0, 0, 0]`` (default ``offset``).

    Returns
    -------
    dict
        ``centre_um`` (z, y, x, full-volume frame), ``axis`` (unit vector), ``radius_um``,
        ``start_um`` and ``stop_um`` (positions along the axis from the centre).

    Examples
    --------
    >>> z, y, x = np.ogrid[:20, :32, :32]
    >>> rod = np.broadcast_to((y - 15.5) ** 2 + (x - 15.5) ** 2 < 36, (20, 32, 32))
    >>> fit = fit_cylinder(rod, (1, 1, 1))
    >>> [round(abs(v), 2) for v in fit["axis"]], round(fit["radius_um"])
    ([1.0, 0.0, 0.0], 6)
    """
    spacing_arr = np.asarray(spacing, float)
    points = _sample_points(residual)
    if points.shape[0] < 10:
        raise InputError(
            "initial geometry: too little residual material to fit a cylinder; give the initial implant as a mask",
            field="initial",
        )
    xyz = (points + np.asarray(offset)) * spacing_arr
    centre = xyz.mean(axis=0)
    rel = xyz - centre
    _, _, vt = np.linalg.svd(rel, full_matrices=False)
    # Of the three principal directions take the one whose enclosing cylinder (99th
    # percentile radius, full extent) is smallest: the longest direction is not the
    # axis when the scan holds a short piece of a thick implant.
    best = None
    for candidate in vt:
        along_c = rel @ candidate
        radial_c = np.linalg.norm(rel - along_c[:, None] * candidate, axis=1)
        size = float(np.percentile(radial_c, 99)) ** 2 * float(np.ptp(along_c) + 1e-9)
        if best is None or size < best[0]:
            best = (size, candidate)
    assert best is not None
    axis = best[1] / np.linalg.norm(best[1])
    if axis[np.argmax(np.abs(axis))] < 0:
        axis = -axis
    along = rel @ axis
    radial = np.linalg.norm(rel - along[:, None] * axis, axis=1)
    h = float(spacing_arr.min())
    if radius is None:
        radius = float(np.percentile(radial, 99)) + h / 2
    elif not (math.isfinite(radius) and radius > 0):
        raise InputError(
            f"initial_radius: {radius!r} must be a positive length in µm", field="initial_radius"
        )
    if extent_mask is None:
        extent_mask, extent_offset = residual, offset
    low, high = _projection_range(
        extent_mask,
        axis,
        centre,
        spacing_arr,
        extent_offset if extent_offset is not None else offset,
    )
    half = float(np.abs(axis) @ spacing_arr) / 2
    return {
        "centre_um": centre.tolist(),
        "axis": axis.tolist(),
        "radius_um": float(radius),
        "start_um": low - half,
        "stop_um": high + half,
    }


def rasterize_cylinder(
    cylinder: dict[str, Any], shape: Sequence[int], spacing: Sequence[float], box: Sequence[slice]
) -> np.ndarray:
    """The voxels of ``box`` whose centres lie inside the cylinder (bool array of the box's shape).

    Examples
    --------
    >>> cyl = {"centre_um": [0, 8, 8], "axis": [1, 0, 0], "radius_um": 3, "start_um": -1, "stop_um": 4}
    >>> int(rasterize_cylinder(cyl, (6, 17, 17), (1, 1, 1), (slice(0, 6),) + (slice(0, 17),) * 2).sum())
    145
    """
    spacing_arr = np.asarray(spacing, float)
    centre = np.asarray(cylinder["centre_um"], float)
    axis = np.asarray(cylinder["axis"], float)
    grids = [(np.arange(s.start, s.stop) * h - c) for s, h, c in zip(box, spacing_arr, centre)]
    out = np.zeros(tuple(s.stop - s.start for s in box), bool)
    r2 = cylinder["radius_um"] ** 2
    y = grids[1][:, None]
    x = grids[2][None, :]
    for i, z in enumerate(grids[0]):
        along = axis[0] * z + axis[1] * y + axis[2] * x
        dist2 = z * z + y * y + x * x - along * along
        out[i] = (dist2 <= r2) & (along >= cylinder["start_um"]) & (along <= cylinder["stop_um"])
    return out


# --------------------------------------------------------------------------- the analysis


def quantify(
    labels: Any,
    spacing: Sequence[float] | float | None,
    *,
    roles: ClassRoles | str | dict[str, Any] | None = None,
    roi: Any = None,
    band: tuple[float, float] | None = None,
    initial: Any = None,
    cylinder: bool = False,
    screw: bool = False,
    initial_radius: float | None = None,
    implantation_date: str | _dt.date | None = None,
    scan_date: str | _dt.date | None = None,
    days: float | None = None,
    shell_width: float = 50.0,
    shells: int = 10,
    thickness_convention: str = "unbiased",
    histogram_bins: int = 20,
    min_fragment_voxels: int = 1,
    keep_maps: bool = False,
    name: str = "labels",
) -> AnalysisResult:
    """Measure the degradation and osseointegration quantities of one label volume.

    Parameters
    ----------
    labels : array-like ``(z, y, x)`` of int
        The segmentation.
    spacing : sequence of 3 float
        Voxel size in µm ``(z, y, x)``; anisotropic voxels are measured correctly.
    roles : ClassRoles, str or dict, optional
        Which label is bone, residual material, degradation layer
        (:func:`~.roles.resolve_roles`); default ``0, 1, 2, 3``.
    roi : array-like of bool, optional
        Region of interest: every quantity counts only voxels (or surface facets, or
        fragments' voxels) inside it.
    band : (float, float), optional
        Keep only voxels whose distance from the implant surface (0 inside the implant
        region) lies in ``[band[0], band[1]]`` µm (combined with ``roi``).
    initial : array-like of bool, optional
        The initial (as-implanted) implant as a mask on the label grid.
    cylinder : bool
        Without ``initial``: fit a cylinder to the residual material
        (:func:`fit_cylinder`) as the initial implant.
    screw : bool
        Without ``initial``: fit a screw (core radius, thread depth, pitch, axis;
        :func:`~.screw.fit_screw`) to the residual material as the initial implant.
    initial_radius : float, optional
        Nominal implant radius (µm) for the cylinder fit; for the screw fit the
        nominal major (thread crest) radius.
    implantation_date, scan_date : str ``YYYY-MM-DD`` or date, optional
    days : float, optional
        Time since implantation, instead of the dates.
    shell_width : float
        Width of the concentric shells (µm) for BV/TV around the implant.
    shells : int
        Number of shells (0: none).
    thickness_convention : {"unbiased", "bonej"}
        See :mod:`.thickness`.
    histogram_bins : int
    min_fragment_voxels : int
        Residual fragments smaller than this are not counted.
    keep_maps : bool
        Keep the thickness map in the result.
    name : str
        The volume's name in messages.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    InputError
        No implant class (neither residual material nor degradation layer) in the
        labels or in the region, an empty region, a mask of another shape, bad dates.

    Notes
    -----
    With ``V_c`` the volume of class ``c`` inside the region (voxel count times
    ``dz dy dx``), ``A`` marching-cubes areas, ``T`` the local thickness:

    * layer fraction ``= V_layer / (V_res + V_layer)``
    * degraded fraction ``= (V_0 - V_res∩0) / V_0`` (``V_0``: initial implant)
    * equivalent depth ``= (V_0 - V_res∩0) / A_0``; degradation depth = the
      area-weighted mean distance from the initial surface to the residual material
    * rate ``= depth / days``; corrosion rate (mm/year) ``= equivalent depth / years``
    * shell ``k``: ``BV/TV = V_bone / V_tissue`` over non-implant voxels at distance
      ``[k w, (k+1) w)`` from the implant surface
    * BIC ``= A(implant surface facing bone) / A(implant surface) · 100``

    Examples
    --------
    >>> from unified_framework.data.degrading import make_degrading_cylinder
    >>> labels, truth = make_degrading_cylinder((16, 64, 64), (5.0, 5.0, 5.0))
    >>> result = quantify(labels, (5.0, 5.0, 5.0), shell_width=20.0, shells=3)
    >>> bool(abs(result.values["residual_volume_mm3"] / truth["residual_volume_mm3"] - 1) < 0.02)
    True
    """
    labels = _check_labels(labels, name)
    spacing_t = _check_spacing(spacing)
    spacing_arr = np.asarray(spacing_t)
    roles = resolve_roles(roles)
    if not roles.implant:
        raise InputError(
            f"{name}: no implant class: set the residual or layer role", field="classes"
        )
    if not (math.isfinite(shell_width) and shell_width > 0):
        raise InputError(
            f"shell_width: {shell_width!r} must be a positive length in µm", field="shell_width"
        )
    if int(shells) < 0:
        raise InputError(f"shells: {shells!r} must be >= 0", field="shells")
    shells = int(shells)
    shape = tuple(int(n) for n in labels.shape)
    voxel = float(np.prod(spacing_arr))
    h = float(spacing_arr.min())
    roi_arr = _check_mask(roi, shape, "roi") if roi is not None else None
    if band is not None:
        lo, hi = float(band[0]), float(band[1])
        if not (math.isfinite(lo) and lo >= 0 and hi > lo):
            raise InputError(f"band: ({lo}, {hi}) must be 0 <= near < far µm", field="band")
        band = (lo, hi)
    initial_arr = _check_mask(initial, shape, "initial") if initial is not None else None
    n_days = elapsed_days(implantation_date, scan_date, days)
    if cylinder and screw:
        raise InputError("initial geometry: fit a cylinder or a screw, not both", field="initial")

    implant_box = _bounding_box(labels, roles.implant)
    if implant_box is None:
        names = ", ".join(
            f"{role} ({value})" for role, value in roles.as_dict().items() if value in roles.implant
        )
        raise InputError(
            f"{name}: no implant in the labels: no voxel of {names}; check --classes",
            field="classes",
        )
    max_d = shells * shell_width
    if band is not None:
        max_d = max(max_d, band[0], band[1] if math.isfinite(band[1]) else band[0])
    margin = [int(math.ceil(max_d / s)) + 2 for s in spacing_arr]
    box = _grow(implant_box, margin, shape)
    if initial_arr is not None:
        init_box = _bounding_box(initial_arr.view(np.uint8), [1])
        if init_box is not None:
            box = _union(box, _grow(init_box, [2, 2, 2], shape))
    lab = labels[box]  # a view: no copy of the box
    offset = [s.start for s in box]
    # The implant mask is made from the labels slab by slab where needed, never held
    # whole (a bool copy of the box is half the label volume at 512³).
    implant = _LabelMask(lab, roles.implant)

    # Distance from the implant surface, slab by slab (exact up to max_d; the z direction
    # by a capped column distance, one byte per voxel: see _bounded_edt).
    region: np.ndarray | None = None
    if roi_arr is not None:
        region = roi_arr[box].copy()
    elif band is not None:
        region = np.ones(lab.shape, bool)
    n_shells_counts = np.zeros((max(shells, 1), 2), np.int64)  # bone, tissue
    bone_value = roles.bone if roles.bone is not None else -1
    from ._bounded_edt import bounded_distance_slabs

    distances = bounded_distance_slabs(
        lab.shape[0],
        implant.__getitem__,
        (lab.shape[1], lab.shape[2]),
        spacing_t,
        max_d + 2 * float(spacing_arr.max()),
        # About 2 million voxels per slab: the slab's float64 work array and the shell
        # counting's temporaries stay a small fraction of the label volume.
        max(1, min(SLAB, 2**21 // max(1, lab.shape[1] * lab.shape[2]))),
        threads(),
    )
    for zs, dist in distances:
        # The implant surface lies half a voxel beyond the centres of its outer voxels.
        dist = np.maximum(dist - np.float32(h / 2), 0, where=dist > 0, out=dist)
        if band is not None and region is not None:
            region[zs] &= (dist >= band[0]) & (dist <= band[1])
        if shells:
            outside = ~implant[zs]
            if region is not None:
                outside &= region[zs]
            k = np.floor(dist[outside] / shell_width).astype(np.int64)
            inside_range = k < shells
            k = k[inside_range]
            is_bone = (lab[zs][outside] == bone_value)[inside_range]
            n_shells_counts[:, 0] += np.bincount(k[is_bone], minlength=shells)[:shells]
            n_shells_counts[:, 1] += np.bincount(k, minlength=shells)[:shells]
        del dist
    region_full_box = region
    _release_memory()

    # Class volumes: the box with the band, plus (if the band reaches beyond it) the rest.
    n_values = (
        int(max(max(v for v in roles.as_dict().values() if v is not None), int(lab.max()))) + 1
    )
    counts = _counts(lab, region, n_values)
    if band is None or not math.isfinite(band[1]):
        total = _counts(labels, roi_arr, n_values + 0)
        inside_box = _counts(lab, roi_arr[box] if roi_arr is not None else None, n_values)
        counts = counts + (total - inside_box)
    roi_voxels = int(counts.sum())
    if roi_voxels == 0:
        raise InputError(
            f"{name}: the region of interest is empty (roi/band select no voxel)", field="roi"
        )

    def vol(value: int | None) -> float:
        if value is None or value >= counts.size - 1:
            return 0.0
        return float(counts[value]) * voxel / UM3_PER_MM3

    v_res, v_layer, v_bone = vol(roles.residual), vol(roles.layer), vol(roles.bone)
    v_implant = v_res + v_layer
    v_roi = roi_voxels * voxel / UM3_PER_MM3
    if v_implant == 0:
        raise InputError(
            f"{name}: no implant (residual material or degradation layer) inside the region of interest",
            field="roi",
        )
    values: dict[str, Any] = {
        "roi_volume_mm3": v_roi,
        "residual_volume_mm3": v_res,
        "layer_volume_mm3": v_layer,
        "implant_volume_mm3": v_implant,
        "bone_volume_mm3": v_bone,
        "layer_fraction": v_layer / v_implant,
        "bv_tv": v_bone / (v_roi - v_implant) if v_roi > v_implant else None,
    }

    # The residual material in its own bounding box (plus 2 voxels).
    rbox = _bounding_box(lab, [roles.residual]) if roles.residual is not None else None
    if rbox is None:
        rbox = tuple(slice(0, 1) for _ in lab.shape)
    rbox = _grow(rbox, [2, 2, 2], lab.shape)
    residual = (
        lab[rbox] == roles.residual if roles.residual is not None else np.zeros((1, 1, 1), bool)
    )
    r_offset = [o + b.start for o, b in zip(offset, rbox)]
    # Surfaces (marching cubes), BIC.
    sel_roi = region_full_box
    res_mesh = surface_mesh(residual, spacing_t, r_offset)
    keep = _select_box(res_mesh, shape, offset, lab.shape, sel_roi)
    values["residual_surface_mm2"] = float(res_mesh.areas[keep].sum()) / UM2_PER_MM2
    imp_mesh = surface_mesh(implant, spacing_t, offset)
    keep = _select_box(imp_mesh, shape, offset, lab.shape, sel_roi)
    imp_area = float(imp_mesh.areas[keep].sum())
    values["implant_surface_mm2"] = imp_area / UM2_PER_MM2
    values["residual_surface_to_volume_per_mm"] = (
        values["residual_surface_mm2"] / v_res if v_res > 0 else None
    )
    contact = _contact(imp_mesh, keep, lab, offset, spacing_arr, roles)
    values["contact_area_mm2"] = float(imp_mesh.areas[keep][contact].sum()) / UM2_PER_MM2
    values["bic_percent"] = (
        100.0 * values["contact_area_mm2"] * UM2_PER_MM2 / imp_area if imp_area > 0 else None
    )
    # Keep only what later steps need: the residual surface points (for the depth) and,
    # for the cylinder fit, the implant mask (then dropped).
    res_points = res_mesh.centroids * spacing_arr
    del contact, imp_mesh, res_mesh
    _release_memory()
    settings_cyl = None
    settings_screw = None
    if initial_arr is None and cylinder:
        settings_cyl = fit_cylinder(
            residual, spacing_t, r_offset, initial_radius, extent_mask=implant, extent_offset=offset
        )
    elif initial_arr is None and screw:
        from .screw import fit_screw

        settings_screw = fit_screw(
            residual,
            spacing_t,
            r_offset,
            initial_radius,
            extent_mask=implant,
            extent_offset=offset,
        )
    del implant

    # Residual fragments (26-connected).
    res_roi = residual & region[rbox] if region is not None else residual
    structure = np.ones((3, 3, 3), bool)
    components, n_comp = ndi.label(res_roi, structure=structure)
    sizes = np.bincount(components.reshape(-1))[1:] if n_comp else np.zeros(0, np.int64)
    del components
    big = sizes[sizes >= max(1, int(min_fragment_voxels))]
    values["fragments"] = int(big.size)
    values["largest_fragment_mm3"] = float(big.max()) * voxel / UM3_PER_MM3 if big.size else 0.0

    # Degradation layer local thickness.
    thickness_map = None
    map_box = None
    lbox = _bounding_box(lab, [roles.layer]) if roles.layer is not None else None
    if lbox is not None:
        # One voxel of (non-layer) context around the layer: outside the array counts
        # as structure (a layer cut by the field of view), so the crop must not cut it.
        lbox = _grow(lbox, [1, 1, 1], lab.shape)
    hist: dict[str, list[float]] = {"edges_um": [], "fraction": []}
    for key in ("mean", "sd", "median", "max"):
        values[f"layer_thickness_{key}_um"] = None
    if lbox is not None:
        sub = lab[lbox] == roles.layer
        tmap = local_thickness(sub, spacing_t, thickness_convention)
        sel = sub & region[lbox] if region is not None else sub
        samples = tmap[sel]
        if samples.size:
            values["layer_thickness_mean_um"] = float(samples.mean())
            values["layer_thickness_sd_um"] = (
                float(samples.std(ddof=1)) if samples.size > 1 else 0.0
            )
            values["layer_thickness_median_um"] = float(np.median(samples))
            values["layer_thickness_max_um"] = float(samples.max())
            top = float(samples.max())
            counts_h, edges = np.histogram(
                samples, bins=int(histogram_bins), range=(0.0, top if top > 0 else 1.0)
            )
            hist = {"edges_um": edges.tolist(), "fraction": (counts_h / samples.size).tolist()}
        if keep_maps:
            thickness_map = tmap
            map_box = tuple(slice(o + s.start, o + s.stop) for o, s in zip(offset, lbox))
        del tmap
    _release_memory()

    # Initial geometry: degraded fraction, depth, rate.
    for key in (
        "initial_volume_mm3",
        "degraded_volume_mm3",
        "degraded_fraction",
        "initial_surface_mm2",
        "degradation_depth_um",
        "equivalent_depth_um",
        "days",
        "degradation_rate_um_per_day",
        "equivalent_rate_um_per_day",
        "corrosion_rate_mm_per_year",
        "volume_loss_rate_mm3_per_day",
    ):
        values[key] = None
    init_box_arr = None
    if initial_arr is not None:
        init_box_arr = initial_arr[box]
    elif settings_cyl is not None:
        init_box_arr = rasterize_cylinder(settings_cyl, shape, spacing_t, box)
    elif settings_screw is not None:
        from .screw import rasterize_screw

        init_box_arr = rasterize_screw(settings_screw, shape, spacing_t, box)
    values["days"] = n_days
    if init_box_arr is not None:
        init_sel = init_box_arr & region if region is not None else init_box_arr
        v0 = float(np.count_nonzero(init_sel)) * voxel / UM3_PER_MM3
        res_in = 0
        if roles.residual is not None:
            for zs in _slabs(lab.shape[0]):
                res_in += int(np.count_nonzero(init_sel[zs] & (lab[zs] == roles.residual)))
        v_res_in = float(res_in) * voxel / UM3_PER_MM3
        init_mesh = surface_mesh(init_box_arr, spacing_t, offset)
        keep = _select_box(init_mesh, shape, offset, lab.shape, sel_roi)
        a0 = float(init_mesh.areas[keep].sum())
        values["initial_volume_mm3"] = v0
        values["degraded_volume_mm3"] = v0 - v_res_in
        values["degraded_fraction"] = (v0 - v_res_in) / v0 if v0 > 0 else None
        values["initial_surface_mm2"] = a0 / UM2_PER_MM2
        if a0 > 0:
            values["equivalent_depth_um"] = (v0 - v_res_in) * UM3_PER_MM3 / a0
            # Local depth: distance from the initial surface to the residual surface
            # (nearest facet centre of the residual's marching-cubes surface), 0 where
            # the initial surface still lies in residual material.
            c = init_mesh.centroids[keep]
            idx = np.clip(
                np.rint(c - np.asarray(offset, float)).astype(np.intp), 0, np.asarray(lab.shape) - 1
            )
            # Only the facets outside residual material need the (costly) nearest-point query.
            away = lab[idx[:, 0], idx[:, 1], idx[:, 2]] != roles.residual
            d = np.zeros(c.shape[0])
            if away.any():
                d[away] = _distance_to_mesh(c[away] * spacing_arr, res_points)
            w = init_mesh.areas[keep]
            values["degradation_depth_um"] = float((d * w).sum() / w.sum())
        if n_days:
            if values["degradation_depth_um"] is not None:
                values["degradation_rate_um_per_day"] = values["degradation_depth_um"] / n_days
            if values["equivalent_depth_um"] is not None:
                values["equivalent_rate_um_per_day"] = values["equivalent_depth_um"] / n_days
                values["corrosion_rate_mm_per_year"] = (
                    values["equivalent_depth_um"] / 1000.0 / (n_days / DAYS_PER_YEAR)
                )
            values["volume_loss_rate_mm3_per_day"] = values["degraded_volume_mm3"] / n_days

    shell_rows = []
    for k in range(shells):
        bone_n, tissue_n = (int(x) for x in n_shells_counts[k])
        shell_rows.append(
            {
                "inner_um": k * shell_width,
                "outer_um": (k + 1) * shell_width,
                "bone_mm3": bone_n * voxel / UM3_PER_MM3,
                "tissue_mm3": tissue_n * voxel / UM3_PER_MM3,
                "bv_tv": bone_n / tissue_n if tissue_n else None,
            }
        )
    settings = {
        "name": name,
        "shape": list(shape),
        "spacing_um": list(spacing_t),
        "roles": roles.as_dict(),
        "roi": roi is not None,
        "band_um": list(band) if band is not None else None,
        "shell_width_um": float(shell_width),
        "shells": shells,
        "thickness_convention": thickness_convention,
        "initial": "mask"
        if initial_arr is not None
        else ("cylinder" if cylinder else ("screw" if screw else None)),
        "cylinder": settings_cyl,
        "screw": settings_screw,
        "implantation_date": str(implantation_date) if implantation_date else None,
        "scan_date": str(scan_date) if scan_date else None,
        "min_fragment_voxels": int(min_fragment_voxels),
    }
    return AnalysisResult(values, shell_rows, hist, settings, thickness_map, map_box)


def _distance_to_mesh(points: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Distance (µm) from each point to the nearest of ``surface``'s points (KD tree)."""
    from scipy.spatial import cKDTree

    if surface.shape[0] == 0:
        return np.full(points.shape[0], np.nan)
    distance, _ = cKDTree(surface).query(points, workers=threads())
    return np.asarray(distance, float)


def _select_box(
    mesh: _Mesh,
    shape: Sequence[int],
    offset: Sequence[int],
    box_shape: Sequence[int],
    region: np.ndarray | None,
) -> np.ndarray:
    """Triangles inside the volume and (if given) the box's region mask."""
    if mesh.areas.size == 0:
        return np.zeros(0, bool)
    c = mesh.centroids
    keep = np.all((c >= -0.5) & (c <= np.asarray(shape, float) - 0.5), axis=1)
    if region is not None and keep.any():
        idx = np.rint(c[keep] - np.asarray(offset, float)).astype(np.intp)
        idx = np.clip(idx, 0, np.asarray(box_shape) - 1)
        keep[np.flatnonzero(keep)] = region[idx[:, 0], idx[:, 1], idx[:, 2]]
    return keep


def _contact(
    mesh: _Mesh,
    keep: np.ndarray,
    lab: np.ndarray,
    offset: Sequence[int],
    spacing: np.ndarray,
    roles: ClassRoles,
) -> np.ndarray:
    """For the kept triangles: does the voxel just outside the implant surface hold bone?

    The label is read (nearest voxel) at the centroid moved outwards by 0.75 voxel
    along the normal (the voxel size in the normal's direction), and once more at
    1.5 voxels where the first step still lands in the implant.
    """
    if not keep.any() or roles.bone is None:
        return np.zeros(int(keep.sum()), bool)
    c = mesh.centroids[keep] - np.asarray(offset, float)
    n = mesh.normals[keep]
    # Step in index units: 0.75 of the voxel's extent along the normal.
    step_um = 0.75 * np.sqrt(((n * spacing) ** 2).sum(axis=1))
    step_idx = n * (step_um[:, None] / spacing)
    limit = np.asarray(lab.shape) - 1
    result = np.zeros(c.shape[0], bool)
    pending = np.ones(c.shape[0], bool)
    for factor in (1.0, 2.0):
        p = np.clip(np.rint(c + factor * step_idx).astype(np.intp), 0, limit)
        value = lab[p[:, 0], p[:, 1], p[:, 2]]
        in_implant = np.isin(value, roles.implant)
        result |= pending & (value == roles.bone)
        pending &= in_implant
    return result
