"""Batched slice prediction and SUN's per-axis soft voting into one accumulator."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InputError
from ...utils.device import resolve_device
from ...utils.heap import reuse_freed_memory
from ..axes import AxisGrid, ProbabilitySlab, axis_grid, parse_axes, sample_slices
from ..model_package import SunModel
from ..slice_model import SliceModel
from ..votes import MAX_AXES
from .accumulator import DEFAULT_CHUNK, MemoryAccumulator, chunk_regions, fuse
from .budget import DEFAULT_MEMORY_BUDGET, MemoryBudget

logger = logging.getLogger(__name__)


def activation_bytes_per_pixel(model: SunModel) -> int:
    """Rough upper bound of inference activation memory per input pixel (float32)."""
    widths = model.config.widths()
    skips = sum(w / 4**level for level, w in enumerate(widths))
    return (
        int(
            4
            * (3 * skips + 4 * widths[0] + 2 * model.config.num_classes + model.config.in_channels)
        )
        + 1
    )


class VolumeSource:
    """Reads float32 boxes ``(channels, z, y, x)`` from numpy, Zarr or dask arrays.

    Parameters
    ----------
    channels : sequence of array-like
        One ``(z, y, x)`` array per channel, all of the same shape; lazy arrays are
        read box by box.
    name : str
        How to call the volume in messages.
    """

    def __init__(self, channels: Sequence[Any], name: str = "volume") -> None:
        shapes = {tuple(int(n) for n in c.shape) for c in channels}
        if len(shapes) != 1:
            raise InputError(
                f"{name}: channels have different shapes {sorted(shapes)}; expected one shape"
            )
        self.channels = list(channels)
        self.shape = shapes.pop()
        if len(self.shape) != 3:
            raise InputError(f"{name}: has shape {self.shape}; expected a 3D volume (z, y, x)")
        self.dtype = np.dtype(self.channels[0].dtype)
        self.name = name

    @classmethod
    def from_array(cls, array: Any, name: str = "volume") -> VolumeSource:
        """A ``(z, y, x)`` or ``(channels, z, y, x)`` array."""
        if array.ndim == 3:
            return cls([array], name)
        if array.ndim == 4:
            return cls([array[c] for c in range(array.shape[0])], name)
        raise InputError(
            f"{name}: has shape {tuple(array.shape)}; expected (z, y, x) or (channels, z, y, x)"
        )

    @property
    def full_shape(self) -> tuple[int, ...]:
        """``(z, y, x)`` for one channel, else ``(channels, z, y, x)``."""
        return self.shape if len(self.channels) == 1 else (len(self.channels), *self.shape)

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """The box ``region`` as float32 ``(channels, z, y, x)``.

        Chunked arrays (Zarr) are read one chunk row along ``z`` at a time: Zarr
        fetches all encoded chunks of a selection before decoding them, which for a
        thin box across a large volume would hold many chunks at once.
        """
        shape = tuple(r.stop - r.start for r in region)
        if len(self.channels) == 1 and not hasattr(self.channels[0], "chunks"):
            return np.asarray(self.channels[0][region], dtype=np.float32)[
                None
            ]  # in memory: no copy if float32
        out = np.empty((len(self.channels), *shape), dtype=np.float32)
        for c, channel in enumerate(self.channels):
            chunks = getattr(channel, "chunks", None)
            step = (
                int(chunks[0])
                if chunks and isinstance(chunks[0], (int, np.integer))
                else shape[0] or 1
            )
            z0 = region[0].start
            while z0 < region[0].stop:
                z1 = min(z0 - z0 % step + step, region[0].stop)  # up to the next chunk border
                block = channel[(slice(z0, z1), region[1], region[2])]
                if hasattr(block, "compute"):
                    block = block.compute(scheduler="synchronous")
                out[c, z0 - region[0].start : z1 - region[0].start] = block
                z0 = z1
        return out


@dataclass
class RunStats:
    """Where the time of a prediction went (for benchmarks and logs).

    ``slice_pixels`` counts the slice pixels predicted, ``network_pixels`` the pixels
    the network processed (slices padded to its size divisor).
    """

    network_seconds: float = 0.0
    sampling_seconds: float = 0.0
    fusion_seconds: float = 0.0
    slice_pixels: int = 0
    network_pixels: int = 0
    units: int = 0


class SlicePredictor:
    """Applies a model to stacks of raw slice images, in batches.

    Parameters
    ----------
    model : SunModel
    device : str or torch.device, optional
        ``None``/``"auto"``: a GPU if present, else the CPU.
    batch_pixels : int, optional
        Pixels per network batch; by default what fits in the budget's ``activations``.
    memory_budget : int or MemoryBudget
        The prediction's budget (bytes: an in-memory run's, see :mod:`.budget`).
    amp : bool, optional
        Mixed precision (default: on for GPUs, off on the CPU).
    """

    def __init__(
        self,
        model: SunModel,
        device: Any = None,
        batch_pixels: int | None = None,
        memory_budget: int | MemoryBudget = DEFAULT_MEMORY_BUDGET,
        amp: bool | None = None,
    ) -> None:
        import torch

        from ..networks import fold_batch_norm

        self.model = model
        self.num_classes = model.config.num_classes
        self.device = resolve_device(device)
        # channels_last is markedly faster for oneDNN convolutions on CPUs.
        self.memory_format = (
            torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        )
        self.network = fold_batch_norm(model.network(self.device)).to(
            memory_format=self.memory_format
        )
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.batch_pixels = batch_pixels or max(
            MemoryBudget.of(memory_budget).activations // activation_bytes_per_pixel(model), 1
        )

    def batch_size(self, rows: int, cols: int) -> int:
        """Slices of this size per network batch (at least 1)."""
        divisor = self.model.config.divisor
        padded = (rows + -rows % divisor) * (cols + -cols % divisor)
        return max(1, self.batch_pixels // padded)

    def __call__(
        self, images: np.ndarray, stats: RunStats | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Class probabilities ``(k, classes, rows, cols)`` float32 of raw images ``(k, channels, rows, cols)``.

        ``out`` takes them in place (e.g. part of a group's buffer, any strides).
        """
        import torch
        import torch.nn.functional as F

        started = time.perf_counter()
        k, _, rows, cols = images.shape
        images = self.model.normalization.apply(images.astype(np.float32, copy=True))
        divisor = self.model.config.divisor
        pad_rows, pad_cols = -rows % divisor, -cols % divisor
        batch = self.batch_size(rows, cols)
        if out is None:
            out = np.empty((k, self.model.config.num_classes, rows, cols), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, k, batch):
                x = torch.from_numpy(images[i : i + batch]).to(self.device)
                if pad_rows or pad_cols:
                    x = F.pad(x, (0, pad_cols, 0, pad_rows), mode="replicate")
                x = x.contiguous(memory_format=self.memory_format)
                with torch.autocast(self.device.type, enabled=self.amp):
                    logits = self.network(x)
                probabilities = torch.softmax(logits.float(), dim=1)[:, :, :rows, :cols]
                torch.from_numpy(out[i : i + batch]).copy_(
                    probabilities
                )  # any strides, e.g. a transposed view
        if stats is not None:
            stats.network_seconds += time.perf_counter() - started
            stats.slice_pixels += k * rows * cols
            stats.network_pixels += k * (rows + pad_rows) * (cols + pad_cols)
        return out


def unit_groups(
    grid: AxisGrid, start: int, stop: int, max_units: int, chunk: int
) -> list[tuple[int, int]]:
    """Split units ``[start, stop)`` into groups of at most ``max_units``.

    Groups of orthogonal axes end on chunk borders where they can, so that each chunk
    of a Zarr accumulator is rewritten as few times as possible.
    """
    align = chunk if not grid.axis.diagonal and max_units >= chunk else 1
    size = max_units // align * align
    groups, u = [], start
    while u < stop:
        end = min(u // align * align + size, stop)
        groups.append((u, end))
        u = end
    return groups


def max_group_units(grid: AxisGrid, classes: int, channels: int, group_bytes: int) -> int:
    """Units per group so that a group's slice images and probabilities fit ``group_bytes``.

    ``group_bytes`` is a budget's :attr:`~.budget.MemoryBudget.groups`.
    """
    rows, cols = grid.slice_shape
    per_slice = 4 * (classes + channels) * rows * cols
    extra = 1 if grid.axis.diagonal else 0
    return max(1, group_bytes // per_slice - extra)


#: Groups narrower than this make the votes of axes that cross the volume's rows slow.
THIN_GROUP_UNITS = 8


def group_units_by_axis(
    shape: Sequence[int],
    axes: Sequence[str],
    classes: int,
    channels: int,
    budget: MemoryBudget,
) -> dict[str, int]:
    """:func:`max_group_units` of each axis; logs a warning when the budget makes groups thin.

    The accumulator is ``(classes, z, y, x)`` in C order. A group along ``x``, or along a
    diagonal through ``x``, covers only a few voxels of each row, so every group reads and
    writes whole cache lines for a few voxels each: with fewer than
    :data:`THIN_GROUP_UNITS` slices per group those votes take several times longer
    (``docs/sun.md``, *Throughput and memory*).
    """
    limits, thin = {}, []
    for name in axes:
        grid = axis_grid(name, shape)
        limits[name] = max_group_units(grid, classes, channels, budget.groups)
        crosses_rows = 2 in grid.axis.plane if grid.axis.diagonal else grid.axis.principal == 2
        if crosses_rows and limits[name] < min(THIN_GROUP_UNITS, grid.n_units):
            thin.append(name)
    if thin:
        narrowest = min(limits[name] for name in thin)
        logger.warning(
            "working memory %.0f MiB: groups of %d slice(s) along %s; their votes slow down several-fold below %d slices per group, "
            "about %.0fx the memory budget avoids that",
            budget.working / 2**20,
            narrowest,
            ", ".join(thin),
            THIN_GROUP_UNITS,
            math.ceil(THIN_GROUP_UNITS / narrowest),
        )
    return limits


def vote_unit(
    source: VolumeSource,
    predictor: Any,
    accumulator: Any,
    grid: AxisGrid,
    unit_number: int,
    u0: int,
    u1: int,
    stats: RunStats,
    block_bytes: int = MemoryBudget.in_memory(DEFAULT_MEMORY_BUDGET).reading,
) -> None:
    """Predict the slices of units ``[u0, u1)`` of one axis and add their votes.

    The group's slice images are sampled at once and go through the network one
    batch at a time; the group's probabilities are kept (diagonal axes in the order
    the resampling reads them, see :func:`~unified_framework.sun.axes.diagonal_layout`)
    and then resampled, encoded and added chunk by chunk of ``accumulator`` as work
    unit ``unit_number`` (see
    :class:`~unified_framework.sun.inference.accumulator.ZarrAccumulator`).
    Diagonal slices are sampled from boxes of the volume of about ``block_bytes``.
    """
    s0, s1 = grid.slices_for_units(u0, u1)
    rows, cols = grid.slice_shape
    batch = predictor.batch_size(rows, cols)
    classes = predictor.num_classes
    diagonal = grid.axis.diagonal
    # The group's images are read at once: a lazily read volume decodes each chunk
    # once per group, not once per batch of slices.
    started = time.perf_counter()
    images = sample_slices(source.read, grid, s0, s1, len(source.channels), block_bytes)
    stats.sampling_seconds += time.perf_counter() - started
    probabilities = np.empty(
        (rows, classes, s1 - s0, cols) if diagonal else (s1 - s0, classes, rows, cols), np.float32
    )
    # Slice-major view of the buffer, so that the network writes each batch in place.
    slices_first = probabilities.transpose(2, 1, 0, 3) if diagonal else probabilities
    for b0 in range(0, s1 - s0, batch):
        b1 = min(b0 + batch, s1 - s0)
        predictor(images[b0:b1], stats, out=slices_first[b0:b1])
    del images
    started = time.perf_counter()
    slab = ProbabilitySlab(probabilities, grid, u0, u1, rows_first=diagonal)
    for tile in group_tiles(grid, accumulator.chunks, u0, u1):
        accumulator.add_votes(unit_number, tile, slab)
    stats.fusion_seconds += time.perf_counter() - started
    stats.units += 1


def group_tiles(
    grid: AxisGrid, chunks: Sequence[int], u0: int, u1: int
) -> Iterable[tuple[slice, ...]]:
    """The parts of accumulator chunks that units ``[u0, u1)`` of an axis vote on, one per chunk.

    Also tells which groups a chunk needs again when it was lost (see
    :mod:`~unified_framework.sun.inference.workdir`).
    """
    within = [slice(0, n) for n in grid.shape]
    if not grid.axis.diagonal:
        within[grid.axis.principal] = slice(u0, u1)
    for tile in chunk_regions(grid.shape, chunks, within):
        clipped = tuple(
            slice(max(t.start, w.start), min(t.stop, w.stop)) for t, w in zip(tile, within)
        )
        lo, hi = grid.unit_range(clipped)
        if hi > u0 and lo < u1:
            yield clipped


@dataclass
class SunPrediction:
    """Result of :func:`predict_volume`."""

    labels: np.ndarray
    entropy: np.ndarray
    disagreement: np.ndarray
    probabilities: np.ndarray | None
    axes: tuple[str, ...]
    stats: RunStats


def predict_volume(
    model: SliceModel,
    volume: Any,
    axes: str | int | Iterable[str] | None = None,
    *,
    device: Any = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    return_probabilities: bool = False,
    chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3,
    progress: bool = False,
    predictor: Any = None,
) -> SunPrediction:
    """Segment a volume held in memory with SUN's multi-axis soft voting.

    Parameters
    ----------
    model : SliceModel
        A SUN model package, or any model with the
        :class:`~unified_framework.sun.slice_model.SliceModel` interface (an nnU-Net 2d
        result, a Keras 2D network).
    volume : array-like
        ``(z, y, x)`` or ``(channels, z, y, x)``.
    axes : str, int or list of str, optional
        ``3``, ``9`` or names (see :mod:`unified_framework.sun.axes`); default: the
        model's training axes.
    device : str, optional
        ``cpu``, ``cuda``; default a GPU if present.
    memory_budget : int
        Bytes for slice stacks, activations and reading (the accumulator comes on top;
        see :class:`~.budget.MemoryBudget`).
    return_probabilities : bool
        Also return the fused probabilities (float16, ``(classes, z, y, x)``).
    chunks : sequence of 3 int
        Tiles in which votes are added.
    progress : bool
        Show a progress bar.
    predictor : SlicePredictor, optional
        Reuse a predictor (and its network) across calls.

    Returns
    -------
    SunPrediction
        ``labels`` (uint8), ``entropy`` and ``disagreement`` (float16), optional
        ``probabilities`` and timing ``stats``.
    """
    from tqdm.auto import tqdm

    axes = parse_axes(axes if axes is not None else model.axes)
    if len(axes) > MAX_AXES:
        raise InputError(f"axes: at most {MAX_AXES} axes can vote")
    source = VolumeSource.from_array(volume)
    model.check_volume(source.full_shape, source.dtype, "volume")
    budget = MemoryBudget.in_memory(memory_budget)
    predictor = predictor or model.slice_predictor(device, memory_budget=budget)
    classes = model.num_classes
    accumulator = MemoryAccumulator(source.shape, classes, chunks)
    stats = RunStats()
    work = []
    limits = group_units_by_axis(source.shape, axes, classes, len(source.channels), budget)
    for name in axes:
        grid = axis_grid(name, source.shape)
        work += [
            (grid, u0, u1)
            for u0, u1 in unit_groups(
                grid, 0, grid.n_units, limits[name], chunks[grid.axis.principal]
            )
        ]
    with reuse_freed_memory():  # every group allocates the same buffers again
        for number, (grid, u0, u1) in enumerate(
            tqdm(work, desc="SUN", unit="slab", disable=None if progress else True)
        ):
            vote_unit(source, predictor, accumulator, grid, number, u0, u1, stats, budget.reading)
    started = time.perf_counter()
    labels = np.empty(source.shape, np.uint8)
    entropy = np.empty(source.shape, np.float16)
    disagreement = np.empty(source.shape, np.float16)
    # Up to five classes the fused float16 probabilities are as big as the accumulator
    # and are written over it (each voxel after it has been read).
    fused_probabilities: np.ndarray | None
    if accumulator.array.shape[0] == classes:
        fused_probabilities = accumulator.array.view(np.float16)
    else:
        fused_probabilities = (
            np.empty((classes, *source.shape), np.float16) if return_probabilities else None
        )
    for region in chunk_regions(source.shape, chunks):
        out: dict[str, np.ndarray] = {
            "labels": labels[region],
            "entropy": entropy[region],
            "disagreement": disagreement[region],
        }
        if fused_probabilities is not None:
            out["probabilities"] = fused_probabilities[(slice(None), *region)]
        fuse(accumulator.read(region), len(axes), classes, out)
    probabilities = fused_probabilities if return_probabilities else None
    del accumulator
    stats.fusion_seconds += time.perf_counter() - started
    logger.info(
        "SUN %s axes: network %.1f s, sampling %.1f s, fusion %.1f s",
        len(axes),
        stats.network_seconds,
        stats.sampling_seconds,
        stats.fusion_seconds,
    )
    return SunPrediction(labels, entropy, disagreement, probabilities, axes, stats)


__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "RunStats",
    "SlicePredictor",
    "SunPrediction",
    "VolumeSource",
    "group_tiles",
    "group_units_by_axis",
    "max_group_units",
    "predict_volume",
    "resolve_device",
    "unit_groups",
    "vote_unit",
]
