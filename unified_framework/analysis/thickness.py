"""Local thickness (Hildebrand & Rüegsegger 1997) of a binary structure, in physical units.

The local thickness at a point is the diameter of the largest sphere that contains the
point and lies entirely inside the structure. The spheres are computed by
:func:`porespy.filters.local_thickness` (``method="legacy"``: every distinct value of
the Euclidean distance transform is a sphere radius, as BoneJ's *Thickness* inserts
one sphere per distance-ridge point); this module only adds physical units,
anisotropic voxels and the half-voxel convention.

Anisotropic voxels: the structure is resampled (nearest neighbour, voxels as boxes) on
an isotropic grid of the smallest voxel size, measured there, and read back at the
original voxel centres.

Conventions (``convention``):

* ``"bonej"``: ``T = 2 r`` with ``r`` the distance from a sphere centre (a voxel
  centre) to the nearest background voxel centre -- BoneJ's numbers;
* ``"unbiased"`` (default): ``T = 2 r - h/4``. BoneJ's ``2 r`` of a plate ``n``
  voxels thick is ``n`` for even and ``n + 1`` for odd ``n`` (sphere centres lie on
  voxel centres and the distance reaches the next background voxel centre), so it
  overestimates by up to one voxel ``h``; on curved layers (cylindrical shells 4-12
  voxels thick, many sub-voxel positions, ``benchmarks/analysis.py``) by 0.2-0.35
  voxel on average. Subtracting a quarter voxel leaves less than about 3 % error from
  4 voxels thickness on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

CONVENTIONS = ("unbiased", "bonej")


def _porespy() -> Any:
    import porespy

    # porespy shows tqdm bars unless told not to; library code never prints.
    porespy.settings.tqdm["disable"] = True
    return porespy


def distance_transform(
    mask: np.ndarray, spacing: Sequence[float], parallel: int = 1, black_border: bool = False
) -> np.ndarray:
    """Euclidean distance (float32, units of ``spacing``) from each ``True`` voxel to the nearest ``False`` voxel centre.

    Uses the ``edt`` package (what porespy uses): float32 output, no index arrays,
    anisotropic sampling. Outside the array counts as inside the structure unless
    ``black_border``.

    Examples
    --------
    >>> distance_transform(np.array([[[0, 1, 1, 1, 1, 1, 0]]], bool), (1, 1, 2))[0, 0].tolist()
    [0.0, 2.0, 4.0, 6.0, 4.0, 2.0, 0.0]
    """
    import edt

    out = edt.edt(
        np.ascontiguousarray(mask, dtype=bool),
        anisotropy=tuple(float(s) for s in spacing),
        black_border=black_border,
        parallel=parallel,
    )
    return np.asarray(out, dtype=np.float32)


def _isotropic_indices(
    shape: Sequence[int], spacing: Sequence[float], h: float
) -> list[np.ndarray]:
    """For each axis, the original index of every isotropic-grid sample (nearest voxel)."""
    result = []
    for n, s in zip(shape, spacing):
        m = max(1, int(round(n * s / h)))
        centres = (np.arange(m) + 0.5) * h
        result.append(np.clip((centres / s).astype(np.intp), 0, n - 1))
    return result


def _legacy_in_chunks(
    work: np.ndarray, dt: np.ndarray, radii: np.ndarray, chunk: int
) -> np.ndarray:
    """porespy's legacy local thickness (sphere radii, not yet diameters), chunk by chunk along z.

    A voxel's value depends only on the sphere centres within the largest radius of it,
    and the seeds of each radius come from the whole structure's distance map ``dt``, so
    a halo of ``ceil(max radius) + 2`` slices makes every chunk's core exact.
    """
    filters = _porespy().filters
    n = work.shape[0]
    halo = int(np.ceil(float(radii.max()))) + 2 if radii.size else 2
    chunk = max(int(chunk), 2 * halo)
    if n <= chunk + 2 * halo:
        lt = filters.local_thickness(work, dt=dt, method="legacy", sizes=radii)
        return np.asarray(lt, dtype=np.float32)
    out = np.zeros(work.shape, np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lo, hi = max(0, start - halo), min(n, stop + halo)
        if not work[lo:hi].any():
            continue
        part = filters.local_thickness(work[lo:hi], dt=dt[lo:hi], method="legacy", sizes=radii)
        out[start:stop] = part[start - lo : stop - lo]
        del part
    return out


def local_thickness(
    mask: np.ndarray,
    spacing: Sequence[float],
    convention: str = "unbiased",
    max_radii: int = 96,
    chunk: int = 64,
) -> np.ndarray:
    """Local thickness map of ``mask`` in the units of ``spacing``.

    Parameters
    ----------
    mask : numpy.ndarray of bool, 3D
        The structure (e.g. the degradation layer).
    spacing : sequence of 3 float
        Voxel size; anisotropic voxels are measured on an isotropic grid of the
        smallest size.
    convention : {"unbiased", "bonej"}
        ``T = 2r - h/4`` or BoneJ's ``T = 2r`` (see the module notes).
    max_radii : int
        At most this many sphere radii: the distinct distance values, or, when there
        are more, that many values spread evenly over them (the radius then errs by
        less than the largest gap, reported as ``radius_step``).
    chunk : int
        z slices per porespy call. The spheres are inserted chunk by chunk with a halo
        of the largest radius plus two slices, from the whole structure's distance map
        and radii, so every voxel gets exactly its whole-volume value while porespy's
        per-radius work arrays (several float32 copies) stay chunk-sized.

    Returns
    -------
    numpy.ndarray of float32
        Local thickness at each voxel of ``mask`` (0 elsewhere), same shape. Every
        voxel has the same volume, so statistics over the voxels of ``mask`` are
        volume-weighted as BoneJ's.

    Notes
    -----
    Hildebrand T, Rüegsegger P (1997) A new method for the model-independent
    assessment of thickness in three-dimensional images. J Microsc 185:67-75.
    Dougherty R, Kunzelmann K-H (2007) Computing local thickness of 3D structures
    with ImageJ. Microsc Microanal 13(S02):1678-1679 (BoneJ's implementation).

    Examples
    --------
    >>> plate = np.zeros((3, 12, 12), bool); plate[:, :, 4:8] = True
    >>> t = local_thickness(plate, (1.0, 1.0, 1.0), convention="bonej")
    >>> float(t[1, 6, 5])
    4.0
    """
    if convention not in CONVENTIONS:
        raise InputError(
            f"thickness convention {convention!r}; expected one of {', '.join(CONVENTIONS)}",
            field="thickness_convention",
        )
    mask = np.asarray(mask, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    h = min(spacing)
    isotropic = all(abs(s - h) <= 1e-6 * h for s in spacing)
    if isotropic:
        work = mask
    else:
        index = _isotropic_indices(mask.shape, spacing, h)
        work = mask[np.ix_(*index)]
    if not work.any():
        return np.zeros(mask.shape, np.float32)
    # No padding: outside the array counts as structure (edt's black_border=False),
    # so a layer cut by the field of view keeps its thickness at the border.
    dt = distance_transform(work, (1.0, 1.0, 1.0))
    radii = np.unique(dt[work])
    if radii.size > max_radii:
        radii = radii[np.unique(np.linspace(0, radii.size - 1, max_radii).round().astype(int))]
    radii = radii[::-1].astype(np.float64)
    thickness = _legacy_in_chunks(work, dt, radii, chunk)
    del dt
    thickness *= np.float32(2.0 * h)
    if convention == "unbiased":
        np.subtract(thickness, np.float32(h / 4), out=thickness, where=thickness > 0)
    if not isotropic:
        # Read back at the original voxel centres.
        back = []
        for n, s, m in zip(mask.shape, spacing, thickness.shape):
            back.append(np.clip(((np.arange(n) + 0.5) * s / h).astype(np.intp), 0, m - 1))
        thickness = thickness[np.ix_(*back)]
        thickness[~mask] = 0
    return thickness.astype(np.float32, copy=False)
