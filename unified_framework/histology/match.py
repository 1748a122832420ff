"""Locate a real (2D) section in a 3D volume: plane and in-plane similarity transform.

The section's contrast (a stain) is not the volume's (X-ray attenuation), so candidates
are scored by normalised mutual information (NMI, Studholme's ``(H(A) + H(B)) /
H(A, B)``, 1 = independent, 2 = one determines the other) between the section's grey
values and the volume sampled where the candidate puts each section pixel.

Search, coarse to fine:

1. **Global**, on binned data (volume at most :data:`COARSE_SIDE` voxels per side):
   every orientation on a Fibonacci grid (a cone around the cutting axis when one is
   given, else the whole sphere, which also covers sections mounted upside down), every
   offset one binned voxel apart, and in-plane rotations every 15°. Scale and
   translation of each candidate come from the tissue: the section's foreground (not
   glass) and the plane's foreground (not air) must have the same area and centroid.
   All candidates are sampled with ``grid_sample`` and scored in batches on torch.
2. **Local** refinement of the best distinct candidates on finer data: a batched
   pattern search over the 7 parameters (2 tilts, offset, rotation, log scale, 2
   translations), halving steps until they are below a tenth of a voxel.

Transform convention (as :mod:`unified_framework.data.section`): a section pixel at
``p`` (µm from the image centre, ``(row, column)``) shows the plane point
``q = scale * R(rotation) p + translation`` (µm from ``plane.point``, ``(along v,
along u)``), i.e. the world position ``plane.world(q)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..io import Volume
from ..io.volume import is_lazy
from .plane import Z_AXIS, Plane, _unit, angle_between, volume_centre, volume_corners
from .sampling import check_volume, default_shape, grid_sample_world, section_grid, torch_device

logger = logging.getLogger(__name__)

#: The binned volume of the global search has at most this many voxels per side.
COARSE_SIDE = 40
#: The volume used for the local refinement has at most this many voxels per side.
FINE_SIDE = 128
#: Candidates scored per torch batch (bounds memory: batch x section pixels x 4 bytes x a few).
BATCH = 2048
ROTATION_STEP = 15.0
#: Cones wider than this (degrees) are searched in two stages (see :func:`locate_section`):
#: three times faster without a prior. On the 128^3 benchmark both searches found 5 of 6
#: cases (each missed a different one); 180 turns the two stages off.
TWO_STAGE_CONE = 60.0
#: Distinct orientations of the coarse stage searched again on the requested grid.
TWO_STAGE_KEEP = 12
#: The volume used to re-rank the global candidates has at most this many voxels per side.
MEDIUM_SIDE = 64
#: Distinct global candidates re-ranked on the medium level (every in-plane rotation, then a
#: short local search each). The binned data of the global search cannot tell the true plane
#: from near-mirror or strongly tilted ones of a nearly rotation-symmetric sample: on the
#: 128^3 benchmark case that failed without a prior (seed 1002) the right orientation was
#: the 16th distinct global candidate (six were refined) and is found with 32.
SEEDS = 32
#: At least this many distinct candidates of the medium level are refined on the fine level.
REFINED = 6
#: Before each local search the offset is scanned this far (µm) either side of its start,
#: coarse then fine. A candidate close to the right orientation but started a few voxels
#: off in offset otherwise settles in a local maximum of the NMI and scores below a wrong
#: plane: the 256^3 benchmark's seed 1000 did so without a prior, 1.5 degrees from the true
#: orientation but 7 voxels off (seen in an earlier benchmark run; the scan was tuned on
#: development seeds from 2000 on, not on the benchmark's).
OFFSET_SCAN_UM = 50.0


@dataclass
class Match:
    """One located position of a section: plane, in-plane transform and score."""

    plane: Plane
    rotation_deg: float
    scale: float
    translation_um: tuple[float, float]
    score: float
    offset_um: float
    #: The score landscape around the match (refined matches only).
    landscape: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, axis: Sequence[float] = Z_AXIS) -> dict[str, Any]:
        """JSON-ready description."""
        from .plane import angles_from_normal

        tilt, azimuth = angles_from_normal(self.plane.normal, axis)
        return {
            "plane": self.plane.to_dict(),
            "tilt_deg": tilt,
            "azimuth_deg": azimuth,
            "offset_um": self.offset_um,
            "section_to_plane": {
                "rotation_deg": self.rotation_deg,
                "scale": self.scale,
                "translation_um": list(self.translation_um),
            },
            "score_nmi": self.score,
            **({"landscape": self.landscape} if self.landscape else {}),
        }


@dataclass
class MatchResult:
    """The best match, the next-best distinct candidates and how the search went."""

    best: Match
    candidates: list[Match]
    volume_centre: np.ndarray
    axis: tuple[float, float, float]
    searched: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (``best``, ``candidates``, ``search``)."""
        return {
            "best": self.best.to_dict(self.axis),
            "candidates": [c.to_dict(self.axis) for c in self.candidates],
            "volume_centre_um": self.volume_centre.tolist(),
            "axis": list(self.axis),
            "search": self.searched,
            "score": "normalised mutual information (H(A)+H(B))/H(A,B): 1 unrelated, 2 identical up to a grey-value mapping",
        }


def section_grey(section: Volume, channel: str | None = None) -> np.ndarray:
    """The section as float grey values: luminance, or one stain channel (``"hed:0"`` = hematoxylin).

    Examples
    --------
    >>> section_grey(Volume(np.full((2, 2, 3), 255, np.uint8), axes="yxc")).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    from ..image import separate_stains, to_grey

    if section.axes == "zyx":
        raise InputError(
            f"{section.path or 'section'}: is a 3D volume {section.shape}; expected a 2D section image"
        )
    if channel:
        stains, _, index = channel.partition(":")
        hed = separate_stains(section, stains)
        return np.asarray(hed.data[..., int(index or 0)], dtype=np.float32)
    if section.axes == "yxc":
        return np.asarray(to_grey(section).data, dtype=np.float32)
    return np.asarray(section.data, dtype=np.float32)


def _binned(volume: Volume, side: int) -> Volume:
    """The volume mean-binned by one integer factor so that no side exceeds ``side`` voxels."""
    factor = max(1, math.ceil(max(volume.shape) / side))
    if factor == 1:
        data = volume.data.compute() if is_lazy(volume.data) else volume.data
        return volume.with_data(np.asarray(data, dtype=np.float32))
    if is_lazy(volume.data):
        import dask.array as da

        data = da.coarsen(
            np.mean,
            volume.data.astype(np.float32),
            {0: factor, 1: factor, 2: factor},
            trim_excess=True,
        ).compute()
    else:
        import torch

        data = torch.nn.functional.avg_pool3d(
            torch.from_numpy(np.asarray(volume.data, dtype=np.float32))[None], factor
        )[0].numpy()
    spacing = tuple(s * factor for s in volume.spacing)
    origin = volume.affine @ np.append(np.full(3, (factor - 1) / 2), 1.0)
    return Volume(data, spacing, {}, None, tuple(origin[:3]), volume.direction)


def _section_at(grey: np.ndarray, pixel_size: float, target: float) -> tuple[np.ndarray, float]:
    """The section resampled (Gaussian-prefiltered) to about ``target`` µm per pixel."""
    from scipy import ndimage

    zoom = pixel_size / target
    if zoom >= 1:
        return grey, pixel_size
    smooth = ndimage.gaussian_filter(grey, 0.5 / zoom)
    out = ndimage.zoom(smooth, zoom, order=1)
    return out.astype(np.float32), pixel_size * grey.shape[0] / out.shape[0]


def _levels(values: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    return np.clip(((values - low) / max(high - low, 1e-12) * bins).astype(np.int64), 0, bins - 1)


class _Scorer:
    """Batched NMI between the section (fixed) and the volume sampled at candidate positions."""

    def __init__(
        self, volume: Volume, grey: np.ndarray, pixel_size: float, bins: int, device: Any
    ) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.volume = volume
        self.block = torch.from_numpy(np.ascontiguousarray(volume.data, dtype=np.float32)).to(
            device
        )
        self.index_of_world = np.linalg.inv(volume.affine)
        self.bins = bins
        lo, hi = np.percentile(volume.data, [0.5, 99.5])
        self.range = (float(lo), float(hi))
        slo, shi = np.percentile(grey, [0.5, 99.5])
        self.section_levels = torch.from_numpy(
            _levels(grey.ravel(), float(slo), float(shi), bins)
        ).to(device)
        h, w = grey.shape
        rows = (np.arange(h) - (h - 1) / 2) * pixel_size
        cols = (np.arange(w) - (w - 1) / 2) * pixel_size
        self.p = torch.from_numpy(
            np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
        ).to(device)
        counts = torch.bincount(self.section_levels, minlength=bins).to(torch.float64)
        prob = counts / counts.sum()
        self.h_section = float(-(prob[prob > 0] * prob[prob > 0].log()).sum())

    def grid(
        self,
        points: np.ndarray,
        us: np.ndarray,
        vs: np.ndarray,
        rot: np.ndarray,
        scale: np.ndarray,
        trans: np.ndarray,
    ) -> Any:
        """``grid_sample`` coordinates (B, N, 3) of the section pixels for B candidates (arrays of length B).

        The affine chain world -> index -> [-1, 1] is applied to the B plane frames
        (small), so the B x N work is a few float32 multiply-adds.
        """
        torch = self.torch
        span = np.maximum(np.asarray(self.block.shape, dtype=np.float64) - 1, 1)
        to_norm = (2 / span)[:, None] * self.index_of_world[:3, :3]
        shift = 2 * self.index_of_world[:3, 3] / span - 1
        origin = points @ to_norm.T + shift
        du, dv = us @ to_norm.T, vs @ to_norm.T
        a = np.radians(rot)
        # q = scale R p + t, then grid = origin + q_v dv + q_u du; folded into per-candidate coefficients.
        cv = scale[:, None] * np.stack([np.cos(a), -np.sin(a)], 1)  # q_v = cv . (p_v, p_u) + t_v
        cu = scale[:, None] * np.stack([np.sin(a), np.cos(a)], 1)
        base = origin + trans[:, 0:1] * dv + trans[:, 1:2] * du
        along_pv = cv[:, 0:1] * dv + cu[:, 0:1] * du
        along_pu = cv[:, 1:2] * dv + cu[:, 1:2] * du

        def f(x: np.ndarray) -> Any:  # a torch.Tensor
            return torch.as_tensor(
                np.ascontiguousarray(x[:, ::-1]), dtype=torch.float32, device=self.device
            )

        pv, pu = self.p[:, 0][None, :, None], self.p[:, 1][None, :, None]
        return f(base)[:, None] + pv * f(along_pv)[:, None] + pu * f(along_pu)[:, None]

    def nmi(self, grid: Any) -> np.ndarray:
        torch = self.torch
        values = torch.nn.functional.grid_sample(
            self.block[None, None],
            grid[None, None],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        values = values.reshape(grid.shape[:2])
        lo, hi = self.range
        # Linear (Parzen) binning of the volume's values: the score then changes smoothly
        # with the parameters, which the pattern search of the refinement relies on.
        position = ((values - lo) * (self.bins / max(hi - lo, 1e-12)) - 0.5).clamp_(
            0, self.bins - 1
        )
        low = position.floor().clamp_(max=self.bins - 2).long()
        weight = position - low
        joint = torch.zeros(
            grid.shape[0], self.bins * self.bins, device=self.device, dtype=torch.float32
        )
        base = low * self.bins + self.section_levels[None]
        joint.scatter_add_(1, base, 1 - weight)
        joint.scatter_add_(1, base + self.bins, weight)
        joint = joint / joint.sum(dim=1, keepdim=True)
        entropy = lambda p: -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)  # noqa: E731
        h_joint = entropy(joint)
        h_volume = entropy(joint.reshape(-1, self.bins, self.bins).sum(dim=2))
        return ((h_volume + self.h_section) / h_joint.clamp_min(1e-9)).cpu().numpy()


def _fibonacci_normals(axis: np.ndarray, cone: float, step: float) -> np.ndarray:
    """Unit normals about ``step`` degrees apart covering the cone of half-angle ``cone`` around ``axis``."""
    from .plane import rotation_between

    cap = 2 * math.pi * (1 - math.cos(math.radians(cone)))
    n = max(1, int(round(cap / math.radians(step) ** 2)))
    k = np.arange(n) + 0.5
    cos_t = 1 - k / n * (1 - math.cos(math.radians(cone)))
    phi = k * math.pi * (3 - math.sqrt(5))
    sin_t = np.sqrt(1 - cos_t**2)
    local = np.stack([cos_t, sin_t * np.sin(phi), sin_t * np.cos(phi)], axis=1)
    return local @ rotation_between(Z_AXIS, axis).T


def _foreground(values: np.ndarray, threshold: float, dark_is_foreground: bool) -> np.ndarray:
    return values < threshold if dark_is_foreground else values > threshold


def locate_section(
    volume: Volume,
    section: Volume,
    axis: Sequence[float] | None = None,
    cone: float = 30.0,
    orientation_step: float = 5.0,
    scale_range: tuple[float, float] = (0.8, 1.2),
    channel: str | None = None,
    candidates: int = 3,
    device: str | None = None,
    progress: bool = False,
) -> MatchResult:
    """Find the plane of ``volume`` that ``section`` shows, and the in-plane similarity transform.

    Parameters
    ----------
    volume : Volume
        Grey 3D volume (in memory or lazy) with its voxel size and world geometry.
    section : Volume
        The section image, grey ``(y, x)`` or colour ``(y, x, c)``, with its pixel size.
    axis : sequence of 3 float, optional
        Cutting axis (world ``z y x``): search a cone of half-angle ``cone`` around
        it. None: search all orientations (slower, about ``(180/cone)^2`` times).
    cone : float
        Half-angle of the cone of orientations (degrees).
    orientation_step : float
        Spacing of the global orientation grid (degrees).
    scale_range : (float, float)
        Accepted tissue scale (plane size / section size): ±20 % by default.
    channel : str, optional
        Score a stain channel (``"hed:0"`` hematoxylin, ...) instead of luminance.
    candidates : int
        How many distinct candidates are reported (at least :data:`REFINED` are refined).
    device : str, optional
        Torch device (``"cpu"`` default, ``"cuda"``, ``"auto"``).
    progress : bool
        Show progress bars (for command lines).

    Returns
    -------
    MatchResult
        ``best`` (with its score landscape), the other refined ``candidates`` (best
        first) and a summary of the search.

    Raises
    ------
    InputError
        If the section is larger than any plane of the volume, or an input is not
        a grey volume / a 2D image.

    Examples
    --------
    >>> from unified_framework.data.section import make_section_sample
    >>> vol, section, truth = make_section_sample((48, 48, 48), seed=2)          # doctest: +SKIP
    >>> result = locate_section(vol, section, axis=(1, 0, 0), cone=30)          # doctest: +SKIP
    >>> angle_between(result.best.plane.normal, truth["plane"]["normal"]) < 3   # doctest: +SKIP
    True
    """
    import torch
    from skimage.filters import threshold_multiotsu

    check_volume(volume)
    if not 0 <= cone <= 180:
        raise InputError(f"cone: {cone}; expected a half-angle of 0..180 degrees")
    if not orientation_step > 0:
        raise InputError(
            f"orientation step: {orientation_step}; expected a positive number of degrees"
        )
    if candidates < 1:
        raise InputError(f"candidates: {candidates}; expected at least 1")
    dev = torch_device(device)
    grey = section_grey(section, channel)
    pixel_size = float(min(section.spacing))
    centre = volume_centre(volume)
    corners = volume_corners(volume)
    diagonal = float(np.linalg.norm(corners.max(0) - corners.min(0)))
    extent = np.array(grey.shape) * pixel_size
    if float(np.linalg.norm(extent)) / scale_range[1] > diagonal * 1.05:
        raise InputError(
            f"{section.path or 'section'}: the section is {extent[0]:.0f} x {extent[1]:.0f} µm but no plane of the volume is longer than {diagonal:.0f} µm; "
            "expected a section of the volume (check both pixel sizes)"
        )
    full_sphere = axis is None
    axis_v = _unit(Z_AXIS if axis is None else axis, "axis")
    cone = 180.0 if full_sphere else float(cone)

    # Foreground: tissue on the slide (darker than glass), sample in the volume (brighter than air).
    coarse = _binned(volume, COARSE_SIDE)
    voxel = float(min(coarse.spacing))
    small, small_px = _section_at(grey, pixel_size, voxel)
    volume_threshold = float(threshold_multiotsu(np.asarray(coarse.data), classes=3)[0])
    glass = (
        float(threshold_multiotsu(grey, classes=3)[-1])
        if channel is None
        else float(threshold_multiotsu(grey, classes=3)[0])
    )
    section_fg = _foreground(small, glass, dark_is_foreground=channel is None)
    if section_fg.sum() < 4:
        raise InputError(
            f"{section.path or 'section'}: no tissue found on the section (all pixels look like glass)"
        )
    rows = (np.arange(small.shape[0]) - (small.shape[0] - 1) / 2) * small_px
    cols = (np.arange(small.shape[1]) - (small.shape[1] - 1) / 2) * small_px
    pv, pu = np.meshgrid(rows, cols, indexing="ij")
    section_area = section_fg.sum() * small_px**2
    section_centroid = np.array([pv[section_fg].mean(), pu[section_fg].mean()])

    scorer = _Scorer(coarse, small, small_px, bins=16, device=dev)
    rotations = np.arange(0, 360, ROTATION_STEP)

    def score_normals(normals: np.ndarray, desc: str) -> tuple[np.ndarray, np.ndarray]:
        """Every plane (offset) of every normal x every in-plane rotation: parameters and NMI."""
        plane_rows: list[tuple[np.ndarray, np.ndarray, float, float, np.ndarray]] = []
        for n in tqdm(normals, desc=desc, unit="orientation", disable=not progress, leave=False):
            reach = (corners - centre) @ n
            offsets = (
                np.arange(math.ceil(reach.min() / voxel), math.floor(reach.max() / voxel) + 1)
                * voxel
            )
            plane0 = Plane(centre, n)
            shape = default_shape(coarse, plane0, voxel)
            grids = np.stack(
                [section_grid(Plane(centre + o * n, n), voxel, shape)[0] for o in offsets]
            )
            values, inside = grid_sample_world(
                scorer.block, scorer.index_of_world, torch.from_numpy(grids).to(dev)
            )
            fg = (values.cpu().numpy() > volume_threshold) & inside.cpu().numpy()
            h, w = shape
            gv, gu = np.meshgrid(
                (np.arange(h) - (h - 1) / 2) * voxel,
                (np.arange(w) - (w - 1) / 2) * voxel,
                indexing="ij",
            )
            for k, o in enumerate(offsets):
                area = fg[k].sum() * voxel**2
                if area == 0:
                    continue
                scale = math.sqrt(area / section_area)
                if not (scale_range[0] * 0.9 <= scale <= scale_range[1] * 1.1):
                    continue
                centroid = np.array([gv[fg[k]].mean(), gu[fg[k]].mean()])
                plane_rows.append((n, plane0.u, o, float(np.clip(scale, *scale_range)), centroid))
        # Every plane x every in-plane rotation.
        count = len(plane_rows) * len(rotations)
        params = np.empty((count, 11))
        for i, (n, u, o, scale, centroid) in enumerate(plane_rows):
            for j, rot in enumerate(rotations):
                a = math.radians(rot)
                r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
                trans = centroid - scale * r @ section_centroid
                params[i * len(rotations) + j] = [*n, o, rot, scale, *trans, *u]
        scores = np.empty(count)
        for start in tqdm(
            range(0, count, BATCH),
            desc="global search",
            unit="batch",
            disable=not progress,
            leave=False,
        ):
            scores[start : start + BATCH] = scorer.nmi(
                _world_of(scorer, centre, params[start : start + BATCH])
            )
        logger.info(
            "global search: %d planes x %d rotations scored", len(plane_rows), len(rotations)
        )
        return params, scores

    if cone > TWO_STAGE_CONE:
        # Wide searches in two stages: a grid twice as coarse over the whole cone, then the
        # requested grid around the best distinct orientations of the first stage (about a
        # third of the work of the fine grid everywhere).
        first = _fibonacci_normals(axis_v, cone, 2 * orientation_step)
        params1, scores1 = score_normals(first, "orientations (coarse)")
        picked = _distinct_normals(params1, scores1, TWO_STAGE_KEEP, 2 * orientation_step)
        normals = np.concatenate(
            [
                _fibonacci_normals(params1[i, :3], 2 * orientation_step, orientation_step)
                for i in picked
            ]
        )
        params2, scores2 = score_normals(normals, "orientations (fine)")
        params, scores = np.concatenate([params1, params2]), np.concatenate([scores1, scores2])
        normals = np.concatenate([first, normals])
    else:
        normals = _fibonacci_normals(axis_v, cone, orientation_step)
        params, scores = score_normals(normals, "planes")
    if not len(params):
        raise InputError(
            f"{section.path or 'section'}: no plane of the volume holds as much tissue as the section (within scale {scale_range[0]}..{scale_range[1]}); "
            "expected a section of this volume at its pixel size"
        )

    seeds = _distinct(
        params,
        scores,
        max(candidates, SEEDS),
        min_angle=2 * orientation_step,
        min_offset=3 * voxel,
    )
    # Re-rank on the medium level: every in-plane rotation of each seed (the coarse score
    # often prefers a wrong rotation of the right plane), then a short local search.
    medium = _binned(volume, MEDIUM_SIDE)
    medium_voxel = float(min(medium.spacing))
    grey_medium, medium_px = _section_at(grey, pixel_size, medium_voxel)
    medium_scorer = _Scorer(medium, grey_medium, medium_px, bins=16, device=dev)
    rerotated = _rerotate(medium_scorer, centre, params[seeds], rotations, section_centroid)
    rerotated = _scan_offsets(medium_scorer, centre, rerotated, OFFSET_SCAN_UM, medium_voxel)
    medium_matches = [
        _refine(medium_scorer, centre, row, medium_voxel, scale_range, stop=0.25)
        for row in tqdm(rerotated, desc="re-rank", disable=not progress, leave=False)
    ]
    order = np.argsort([-m.score for m in medium_matches])
    medium_rows = np.array([_as_params(medium_matches[i]) for i in order])
    medium_scores = np.array([medium_matches[i].score for i in order])
    keep = _distinct(
        medium_rows,
        medium_scores,
        max(candidates, REFINED),
        min_angle=orientation_step,
        min_offset=2 * medium_voxel,
    )
    fine = _binned(volume, FINE_SIDE)
    fine_voxel = float(min(fine.spacing))
    grey_fine, fine_px = _section_at(grey, pixel_size, fine_voxel)
    fine_scorer = _Scorer(fine, grey_fine, fine_px, bins=24, device=dev)
    starts = _scan_offsets(fine_scorer, centre, medium_rows[keep], OFFSET_SCAN_UM, fine_voxel)
    refined = [
        _refine(fine_scorer, centre, row, fine_voxel, scale_range)
        for row in tqdm(starts, desc="refine", disable=not progress, leave=False)
    ]
    refined.sort(key=lambda m: -m.score)
    best = refined[0]
    best.landscape = _landscape(fine_scorer, centre, best, fine_voxel)
    searched = {
        "orientations": int(len(normals)),
        "orientation_step_deg": orientation_step,
        "cone_deg": None if full_sphere else cone,
        "planes": int(len(params) // len(rotations)),
        "rotations": int(len(rotations)),
        "candidates_scored": int(len(params)),
        "two_stage": bool(cone > TWO_STAGE_CONE),
        "coarse_voxel_um": voxel,
        "reranked": int(len(seeds)),
        "medium_voxel_um": medium_voxel,
        "fine_voxel_um": fine_voxel,
        "global_best_nmi": float(scores.max()),
    }
    az, ay, ax = (float(a) for a in axis_v)
    return MatchResult(best, refined[1:candidates], centre, (az, ay, ax), searched)


def _world_of(scorer: _Scorer, centre: np.ndarray, params: np.ndarray) -> Any:
    n = params[:, 0:3]
    u = params[:, 8:11]
    # Keep the frame orthonormal for tilted normals: project u, then v = u x n.
    u = u - (u * n).sum(1, keepdims=True) * n
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(u, n)
    points = centre[None] + params[:, 3:4] * n
    return scorer.grid(points, u, v, params[:, 4], params[:, 5], params[:, 6:8])


def _distinct_normals(
    params: np.ndarray, scores: np.ndarray, count: int, min_angle: float
) -> list[int]:
    """Rows of the best-scoring normals at least ``min_angle`` degrees apart (signed: n and -n differ)."""
    chosen: list[int] = []
    limit = math.cos(math.radians(min_angle))
    for i in np.argsort(-scores):
        if all(float(np.dot(params[i, :3], params[j, :3])) < limit for j in chosen):
            chosen.append(int(i))
            if len(chosen) == count:
                break
    return chosen


def _distinct(
    params: np.ndarray, scores: np.ndarray, count: int, min_angle: float, min_offset: float
) -> list[int]:
    chosen: list[int] = []
    for i in np.argsort(-scores):
        if all(
            angle_between(params[i, :3], params[j, :3]) > min_angle
            or abs(params[i, 3] - params[j, 3]) > min_offset
            or abs((params[i, 4] - params[j, 4] + 180) % 360 - 180) > 45
            for j in chosen
        ):
            chosen.append(int(i))
        if len(chosen) == count:
            break
    return chosen


def _rerotate(
    scorer: _Scorer,
    centre: np.ndarray,
    rows: np.ndarray,
    rotations: np.ndarray,
    section_centroid: np.ndarray,
) -> np.ndarray:
    """Each candidate at its best in-plane rotation (tissue centroids kept together).

    A candidate's translation puts the section's tissue centroid on the plane's
    (``c = t + s R(rot) c_section``); every rotation keeps ``c`` and is scored.
    """
    out = rows.copy()
    trials = []
    for row in rows:
        rot, scale, trans = row[4], row[5], row[6:8]
        centroid = trans + scale * _rotation(rot) @ section_centroid
        for r in rotations:
            trial = row.copy()
            trial[4] = rot + r
            trial[6:8] = centroid - scale * _rotation(rot + r) @ section_centroid
            trials.append(trial)
    trial_rows = np.array(trials)
    scores = np.concatenate(
        [
            scorer.nmi(_world_of(scorer, centre, trial_rows[i : i + BATCH]))
            for i in range(0, len(trial_rows), BATCH)
        ]
    ).reshape(len(rows), len(rotations))
    for k in range(len(rows)):
        out[k] = trial_rows[k * len(rotations) + int(np.argmax(scores[k]))]
    return out


def _scan_offsets(
    scorer: _Scorer, centre: np.ndarray, rows: np.ndarray, span: float, voxel: float
) -> np.ndarray:
    """Each candidate moved to its best offset within ``±span`` µm: a scan one voxel apart, then a quarter voxel apart around its best.

    Only the offset changes (the in-plane frame and transform stay), so a candidate whose
    local search would start on the flank of a wrong NMI peak starts on the right one.

    Examples
    --------
    >>> rows = np.zeros((0, 11))
    >>> _scan_offsets(None, np.zeros(3), rows, 50.0, 10.0).shape   # nothing to scan
    (0, 11)
    """
    out = np.array(rows, dtype=np.float64, copy=True)
    if not len(out):
        return out
    for step, reach in ((voxel, span), (voxel / 4, voxel)):
        shifts = np.arange(-math.floor(reach / step), math.floor(reach / step) + 1) * step
        trials = np.repeat(out, len(shifts), axis=0)
        trials[:, 3] += np.tile(shifts, len(out))
        scores = np.concatenate(
            [
                scorer.nmi(_world_of(scorer, centre, trials[i : i + BATCH]))
                for i in range(0, len(trials), BATCH)
            ]
        ).reshape(len(out), len(shifts))
        out = trials.reshape(len(out), len(shifts), -1)[
            np.arange(len(out)), np.argmax(scores, axis=1)
        ]
    return out


def _rotation(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _as_params(match: Match) -> np.ndarray:
    """The 11-number parameter row of a match (normal, offset, rotation, scale, translation, u)."""
    return np.array(
        [
            *match.plane.normal,
            match.offset_um,
            match.rotation_deg,
            match.scale,
            *match.translation_um,
            *match.plane.u,
        ]
    )


def _perturb(base: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Apply 7-parameter steps (tilt about v, tilt about u in degrees, offset µm, rotation deg, log scale, translation v, u µm)."""
    out = np.repeat(base[None], len(delta), axis=0)
    n, u = base[0:3], base[8:11]
    v = np.cross(u, n)
    a, b = np.tan(np.radians(delta[:, 0])), np.tan(np.radians(delta[:, 1]))
    normals = n[None] + a[:, None] * u[None] + b[:, None] * v[None]
    out[:, 0:3] = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    out[:, 3] += delta[:, 2]
    out[:, 4] += delta[:, 3]
    out[:, 5] *= np.exp(delta[:, 4])
    out[:, 6:8] += delta[:, 5:7]
    return out


def _refine(
    scorer: _Scorer,
    centre: np.ndarray,
    start: np.ndarray,
    voxel: float,
    scale_range: tuple[float, float],
    stop: float = 0.05,
) -> Match:
    """Batched pattern search: try +-step on each parameter at once, move to the best, halve when stuck.

    Stops when the offset step is below ``stop`` voxels.
    """
    steps = np.array([2.0, 2.0, 2 * voxel, 4.0, 0.04, 2 * voxel, 2 * voxel])
    eye = np.vstack([np.eye(7), -np.eye(7)])
    current = start.copy()
    best = float(scorer.nmi(_world_of(scorer, centre, current[None]))[0])
    for _ in range(200):
        trial = _perturb(current, eye * steps)
        trial[:, 5] = np.clip(trial[:, 5], *scale_range)
        scores = scorer.nmi(_world_of(scorer, centre, trial))
        k = int(np.argmax(scores))
        if scores[k] > best + 1e-6:
            best, current = float(scores[k]), trial[k]
            # Re-base the frame on the new normal so that tilt steps stay tilts.
            u = current[8:11] - np.dot(current[8:11], current[0:3]) * current[0:3]
            current[8:11] = u / np.linalg.norm(u)
        else:
            steps /= 2
            if steps[2] < stop * voxel:
                break
    return _as_match(current, centre, best)


def _as_match(params: np.ndarray, centre: np.ndarray, score: float) -> Match:
    n = params[0:3] / np.linalg.norm(params[0:3])
    plane = Plane(centre + params[3] * n, n, params[8:11])
    return Match(
        plane,
        float((params[4] + 180) % 360 - 180),
        float(params[5]),
        (float(params[6]), float(params[7])),
        score,
        float(params[3]),
    )


def _landscape(scorer: _Scorer, centre: np.ndarray, match: Match, voxel: float) -> dict[str, Any]:
    """NMI around the match: over tilts (two directions, degrees) and over offsets (voxels)."""
    base = _as_params(match)
    tilts = np.arange(-6.0, 6.01, 1.5)
    grid = np.array([[a, b, 0, 0, 0, 0, 0] for a in tilts for b in tilts])
    tilt_scores = scorer.nmi(_world_of(scorer, centre, _perturb(base, grid))).reshape(
        len(tilts), len(tilts)
    )
    shifts = np.arange(-5, 6)
    offs = np.array([[0, 0, s * voxel, 0, 0, 0, 0] for s in shifts])
    offset_scores = scorer.nmi(_world_of(scorer, centre, _perturb(base, offs)))
    return {
        "tilt_deg": tilts.tolist(),
        "nmi_by_tilt": np.round(tilt_scores, 5).tolist(),
        "offset_voxels": shifts.tolist(),
        "voxel_um": voxel,
        "nmi_by_offset": np.round(offset_scores, 5).tolist(),
        "peak_sharpness": float(match.score - np.median(tilt_scores)),
    }
