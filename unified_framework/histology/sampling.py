"""Sample virtual sections (oblique planes and slabs) from a volume, lazily and on torch.

The volume is never loaded whole: the output image is cut into tiles, and for each
tile only the bounding box (in index space) of the positions it samples is read. For
a dask array (``read_volume(..., lazy=True)``) that reads only the chunks near the
plane; for numpy data it copies only that box.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from ..io import Volume
from ..io.volume import is_lazy
from .plane import Plane, volume_corners

logger = logging.getLogger(__name__)

#: Output tiles are at most this many pixels per side (bounds the region read per step).
TILE = 256


def torch_device(device: str | None = None) -> Any:
    """The torch device to sample on: ``device`` if given, else ``"cpu"``.

    Examples
    --------
    >>> str(torch_device())
    'cpu'
    """
    import torch

    if device in (None, "", "cpu"):
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"device: {exc}; expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: {device} requested but no CUDA GPU is available; use cpu")
    return dev


def check_volume(volume: Volume, name: str | None = None) -> None:
    """Refuse what cannot be sectioned: anything but a grey 3D ``(z, y, x)`` volume.

    Examples
    --------
    >>> check_volume(Volume(np.zeros((2, 2, 2))))
    >>> check_volume(Volume(np.zeros((2, 2))), "slice.tif")
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: slice.tif: is a 2D image with axes 'yx'; expected a grey 3D volume (z, y, x)
    """
    name = name or str(volume.path or "volume")
    if volume.axes != "zyx":
        raise InputError(
            f"{name}: is a {volume.ndim}D image with axes {volume.axes!r}; expected a grey 3D volume (z, y, x)"
        )


def grid_sample_world(block: Any, index_of_world: np.ndarray, points: Any, order: int = 1) -> Any:
    """Sample a torch volume block at world positions with ``torch.nn.functional.grid_sample``.

    Parameters
    ----------
    block : torch.Tensor
        ``(D, H, W)`` float tensor (the volume or a box of it).
    index_of_world : numpy.ndarray
        4x4 matrix from world ``(z, y, x, 1)`` to the block's index ``(z, y, x, 1)``.
    points : torch.Tensor
        ``(..., 3)`` world positions (µm, z y x), on the block's device.
    order : int
        1 trilinear, 0 nearest.

    Returns
    -------
    values : torch.Tensor
        ``points.shape[:-1]``; 0 outside the block.
    inside : torch.Tensor of bool
        Where the position lies within the block's voxel centres.

    Examples
    --------
    >>> import torch
    >>> block = torch.arange(8.0).reshape(2, 2, 2)
    >>> values, _ = grid_sample_world(block, np.eye(4), torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64))
    >>> float(values[0])
    3.5
    """
    import torch
    import torch.nn.functional as F

    # Float32 after one float64 shift to the block's first voxel: world positions of
    # 1e5 µm keep about 0.01 µm precision, far below a voxel.
    m = torch.as_tensor(index_of_world, dtype=torch.float64, device=points.device)
    anchor = -torch.linalg.solve(m[:3, :3], m[:3, 3])  # world position of index 0
    rel = (
        (points.to(torch.float64) - anchor)
        if points.dtype == torch.float64
        else points - anchor.to(points.dtype)
    )
    idx = rel.to(torch.float32) @ m[:3, :3].T.to(torch.float32)
    size = torch.tensor(block.shape, dtype=torch.float32, device=points.device)
    inside = ((idx >= -1e-6) & (idx <= size - 1 + 1e-6)).all(dim=-1)
    # align_corners=True: -1 and +1 are the centres of the first and last voxel; a
    # side of one voxel is padded to two so that the mapping stays defined.
    pad = [0, int(block.shape[2] == 1), 0, int(block.shape[1] == 1), 0, int(block.shape[0] == 1)]
    if any(pad):
        block = F.pad(block[None], pad, mode="replicate")[0]
    span = torch.clamp(
        torch.tensor(block.shape, dtype=torch.float32, device=points.device) - 1, min=1
    )
    norm = (2 * idx / span - 1).flip(-1)  # grid_sample wants (x, y, z)
    flat = norm.reshape(1, 1, 1, -1, 3)
    mode = "nearest" if order == 0 else "bilinear"
    out = F.grid_sample(
        block[None, None].to(torch.float32),
        flat,
        mode=mode,
        padding_mode="zeros",
        align_corners=True,
    )
    values = out.reshape(points.shape[:-1])
    return values * inside, inside


def section_grid(
    plane: Plane, pixel_size: float, shape: Sequence[int], depths: ArrayLike = (0.0,)
) -> np.ndarray:
    """World positions ``(len(depths), H, W, 3)`` of the pixels of a section image.

    Pixel ``(r, c)`` lies at ``point + (r - (H-1)/2) p v + (c - (W-1)/2) p u + d n``
    for each depth ``d`` (µm along the normal).

    Examples
    --------
    >>> section_grid(Plane((0, 0, 0), (1, 0, 0)), 2.0, (1, 3))[0, 0, :, 2].tolist()
    [-2.0, 0.0, 2.0]
    """
    h, w = (int(s) for s in shape)
    rows = (np.arange(h) - (h - 1) / 2) * pixel_size
    cols = (np.arange(w) - (w - 1) / 2) * pixel_size
    vu = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
    flat = plane.world(vu)
    return np.stack([flat + d * plane.normal for d in np.asarray(depths, np.float64).reshape(-1)])


def slab_depths(thickness: float, spacing: Sequence[float]) -> np.ndarray:
    """Depths (µm along the normal) averaged for a section ``thickness`` µm thick.

    One sample per half of the smallest voxel size (at least one), at the centres of
    equal sub-slabs, so a thick section is the mean over its whole slab.

    Examples
    --------
    >>> slab_depths(0, (5, 5, 5)).tolist()
    [0.0]
    >>> slab_depths(10, (5, 5, 5)).tolist()
    [-3.75, -1.25, 1.25, 3.75]
    """
    if not math.isfinite(thickness) or thickness < 0:
        raise InputError(
            f"thickness: {thickness} is not a thickness; expected a finite number >= 0 (µm)"
        )
    n = max(1, math.ceil(thickness / (0.5 * min(spacing))))
    return (np.arange(n) + 0.5) / n * thickness - thickness / 2


def default_shape(volume: Volume, plane: Plane, pixel_size: float) -> tuple[int, int]:
    """Image shape covering the whole volume's projection onto the plane, centred on ``plane.point``."""
    rel = volume_corners(volume) - plane.point
    half_v = np.abs(rel @ plane.v).max()
    half_u = np.abs(rel @ plane.u).max()
    return int(2 * math.ceil(half_v / pixel_size) + 1), int(2 * math.ceil(half_u / pixel_size) + 1)


def _check_pixel_size(pixel_size: float) -> float:
    if not isinstance(pixel_size, (int, float)) or not math.isfinite(pixel_size) or pixel_size <= 0:
        raise InputError(
            f"pixel size: {pixel_size!r} is not a length; expected a positive number of µm"
        )
    return float(pixel_size)


def sample_points(
    volume: Volume,
    points: np.ndarray,
    order: int = 1,
    device: str | None = None,
    tile_points: int = TILE * TILE,
) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``volume`` at world positions ``points (N, ..., 3)``, reading only nearby data.

    The positions are processed in groups along their second-to-last axes (image
    tiles); for each group the index-space bounding box is read from ``volume.data``
    (a dask array reads only the chunks it overlaps) and sampled with torch.

    Returns
    -------
    values : numpy.ndarray of float32
        ``points.shape[:-1]``, 0 outside the volume.
    inside : numpy.ndarray of bool
        Where the position lies inside the volume.

    Examples
    --------
    >>> vol = Volume(np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    >>> values, inside = sample_points(vol, np.array([[[[0.5, 0.5, 0.5], [5.0, 0.0, 0.0]]]]))
    >>> values.tolist(), inside.tolist()
    ([[[3.5, 0.0]]], [[[True, False]]])
    """
    import torch

    dev = torch_device(device)
    check_volume(volume)
    index_of_world = np.linalg.inv(volume.affine)
    shape = np.asarray(volume.shape)
    h, w = points.shape[-3:-1]
    values = np.zeros(points.shape[:-1], dtype=np.float32)
    inside = np.zeros(points.shape[:-1], dtype=bool)
    step = max(1, int(math.sqrt(tile_points)))
    if is_lazy(volume.data) and points.shape[-3] > 1:
        # Tiles about one chunk wide (in µm), so each reads little beyond the chunks the plane crosses.
        chunk_um = min(min(c) * s for c, s in zip(volume.data.chunks, volume.spacing))
        pixel_um = float(np.linalg.norm(points[..., 1, 0, :] - points[..., 0, 0, :], axis=-1).max())
        step = int(min(step, max(8, chunk_um / max(pixel_um, 1e-12))))
    for r0 in range(0, h, step):
        for c0 in range(0, w, step):
            tile = points[..., r0 : r0 + step, c0 : c0 + step, :]
            idx = tile.reshape(-1, 3) @ index_of_world[:3, :3].T + index_of_world[:3, 3]
            lo = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
            hi = np.minimum(np.floor(idx.max(axis=0)).astype(int) + 2, shape)
            if np.any(hi <= lo):
                continue  # the tile lies outside the volume
            region = volume.data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            region = np.asarray(region.compute() if is_lazy(region) else region, dtype=np.float32)
            shift = np.eye(4)
            shift[:3, 3] = -lo
            block = torch.from_numpy(np.ascontiguousarray(region)).to(dev)
            pts = torch.from_numpy(np.ascontiguousarray(tile)).to(dev)
            val, ins = grid_sample_world(block, shift @ index_of_world, pts, order=order)
            values[..., r0 : r0 + step, c0 : c0 + step] = val.cpu().numpy()
            inside[..., r0 : r0 + step, c0 : c0 + step] = ins.cpu().numpy()
    return values, inside


def virtual_section(
    volume: Volume,
    plane: Plane,
    pixel_size: float,
    shape: Sequence[int] | None = None,
    thickness: float = 0.0,
    order: int = 1,
    device: str | None = None,
) -> Volume:
    """Cut a virtual section of ``volume`` along ``plane``: a 2D image in world geometry.

    Parameters
    ----------
    volume : Volume
        Grey 3D volume, in memory or lazy (dask); its ``affine`` places it in the world.
    plane : Plane
        The section plane (world µm); ``plane.point`` becomes the image centre.
    pixel_size : float
        Pixel size of the image in µm (independent of the voxel size).
    shape : (int, int), optional
        Image shape ``(rows, columns)``; by default large enough to hold the whole
        intersection of the plane with the volume.
    thickness : float
        Section thickness in µm: the image is the mean over the slab
        ``[-thickness/2, thickness/2]`` along the normal (0: the plane itself).
    order : int
        1 trilinear interpolation, 0 nearest voxel (for labels).
    device : str, optional
        Torch device (``"cpu"`` default, ``"cuda"``, ``"auto"``).

    Returns
    -------
    Volume
        ``(y, x)`` float32 image (0 outside the volume; labels keep the volume's
        dtype with ``order=0``), spacing ``(pixel_size, pixel_size)``, origin the
        world position of pixel ``(0, 0)`` and direction ``(normal, v, u)``, so the
        image overlays the volume in world space. ``metadata["plane"]`` holds the
        plane, ``metadata["inside_fraction"]`` the share of pixels inside the volume.

    Raises
    ------
    InputError
        If the volume is not a grey 3D volume, or the pixel size or thickness is
        not valid.

    Examples
    --------
    >>> import numpy as np
    >>> from unified_framework.io import Volume
    >>> vol = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), spacing=(2.0, 2.0, 2.0))
    >>> cut = virtual_section(vol, Plane((2.0, 4.0, 5.0), (1.0, 0.0, 0.0)), pixel_size=2.0, shape=(5, 6))
    >>> bool(np.allclose(cut.data, vol.data[1]))
    True
    """
    check_volume(volume)
    pixel_size = _check_pixel_size(pixel_size)
    if shape is None:
        shape = default_shape(volume, plane, pixel_size)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(
            f"section shape: {shape} is not an image shape; expected two positive integers (rows columns)"
        )
    depths = slab_depths(thickness, volume.spacing)
    points = section_grid(plane, pixel_size, shape, depths)
    values, inside = sample_points(volume, points, order=order, device=device)
    if order == 0:
        image = values[len(depths) // 2].astype(volume.dtype)
    else:
        image = values.mean(axis=0).astype(np.float32)
    corner = plane.world(
        np.array([-(shape[0] - 1) / 2 * pixel_size, -(shape[1] - 1) / 2 * pixel_size])
    )
    metadata = {
        "plane": plane.to_dict(),
        "pixel_size_um": pixel_size,
        "thickness_um": float(thickness),
        "inside_fraction": float(inside.all(axis=0).mean()),
        "source": str(volume.path) if volume.path else None,
    }
    direction = np.stack([plane.normal, plane.v, plane.u], axis=1)
    return Volume(
        image, (pixel_size, pixel_size), metadata, None, tuple(float(c) for c in corner), direction
    )


def virtual_stack(
    volume: Volume,
    plane: Plane,
    pixel_size: float,
    count: int,
    step: float,
    shape: Sequence[int] | None = None,
    thickness: float = 0.0,
    device: str | None = None,
) -> Volume:
    """A stack of ``count`` parallel virtual sections ``step`` µm apart (a microtome series).

    The sections are centred on ``plane`` (section ``k`` at offset
    ``(k - (count-1)/2) * step`` along the normal) and share one in-plane frame, so the
    stack is a 3D volume ``(section, y, x)`` with spacing ``(step, pixel_size,
    pixel_size)`` whose world geometry places it in the original volume.

    Examples
    --------
    >>> import numpy as np
    >>> from unified_framework.io import Volume
    >>> vol = Volume(np.random.default_rng(0).random((8, 8, 8), dtype=np.float32))
    >>> stack = virtual_stack(vol, Plane((3.0, 3.5, 3.5), (1, 0, 0)), 1.0, count=3, step=1.0, shape=(8, 8))
    >>> stack.shape, bool(np.allclose(stack.data, vol.data[2:5]))
    ((3, 8, 8), True)
    """
    if not isinstance(count, int) or count < 1:
        raise InputError(f"count: {count!r}; expected a positive number of sections")
    if not math.isfinite(step) or step <= 0:
        raise InputError(f"step: {step!r}; expected a positive distance in µm")
    pixel_size = _check_pixel_size(pixel_size)
    if shape is None:
        shape = default_shape(volume, plane, pixel_size)
    cuts = [
        virtual_section(
            volume,
            Plane(plane.point + (k - (count - 1) / 2) * step * plane.normal, plane.normal, plane.u),
            pixel_size,
            shape,
            thickness,
            device=device,
        )
        for k in range(count)
    ]
    images = [cut.data for cut in cuts]
    first = cuts[0]
    metadata = dict(first.metadata, plane=plane.to_dict(), count=count, step_um=float(step))
    return Volume(
        np.stack(images),
        (float(step), pixel_size, pixel_size),
        metadata,
        None,
        first.origin,
        first.direction,
    )
