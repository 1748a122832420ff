"""Tiled, resumable, distributable inference of a :class:`SegmentationModel` on any image size.

A run lives in a work folder until it is finished::

    WORK/plan.json      what is computed: image, model (with digest), tiles, blocks, batch
    WORK/tissue.npy     foreground at low resolution (tiles outside it are skipped)
    WORK/result.zarr    probabilities (classes, *spatial) float32 and labels "0" (uint8),
                        one Zarr chunk per output block
    WORK/halo/<b>-<n>   block b's weighted sums over its overlap with block n (checked file)
    WORK/partial/<b>    block b's own sums while it waits for halos of another array task
    WORK/done/<block>   a checked file (CRC-32 trailer) with the CRC-32s of the block's
                        probabilities and labels, written after both are stored

The tiles are one global grid (MONAI's ``sliding_window_inference`` grid of the whole
image), and each tile belongs to the block that holds its start corner, so every tile is
predicted exactly once whatever the blocks. A block predicts its own tiles in batches
fixed by the block (its tiles in C order, cut every ``batch``), sums their Gaussian-
weighted probabilities over its extent (the block and a halo on its high sides, less
than one tile wide) and stores the halo parts for the blocks they fall in. A block is
finished by adding the halos of its lower neighbours (in C order) to its own sums and
dividing by the weight sums. Every sum is thus taken in one fixed order from the same
batches wherever a block is computed: one process, dask workers or SLURM array tasks
(each a run of blocks in C order) give the same output (bit-identical with the same
per-process setup; within 1e-6 between this process and worker processes, see
docs/inference.md). No process waits for another: a block whose lower neighbours'
halos are not stored yet keeps its own sums in ``partial/``, and whichever of it and
those neighbours comes last finishes it (else :func:`finish` does). Processes write
different blocks (their own Zarr chunks) and files, or the same bytes atomically, so
they need no shared manifest: each block has its own checked marker
(``utils.workdir_manifest``'s rule for multi-writer folders), and a resume re-reads every
marked block from the store and recomputes those whose data do not match (a missing
Zarr chunk reads as fill value and would otherwise pass); a lost halo is recomputed from
its block's tiles. :func:`finish` builds the multiscale pyramid (OME-Zarr) and moves the
result into place atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path, write_text_atomic
from ..utils.heap import reuse_freed_memory
from ..utils.workdir_manifest import checksum, read_checked, remove_work_folder, write_checked
from .model import SegmentationModel, check_model_fits, load_model, patch_memory
from .tiling import Grid, TissueMask, detect_tissue, gaussian_weights, low_resolution, step_of

logger = logging.getLogger(__name__)

PLAN_VERSION = 2  # 2: tiles belong to one block each, halos passed on
#: Default working memory of one process (bytes): input box, accumulators, one batch.
DEFAULT_BUDGET = 1024 * 2**20
#: Largest output block, in tiles per axis (more blocks share work better over workers).
MAX_BLOCK_TILES = {2: 8, 3: 3}
MAX_BATCH = 4  # larger batches were slower per tile on CPUs (cache) and cost memory
PYRAMID_MIN_SIDE = 256
#: Weight sums kept per process (one block each): blocks in the same position relative to
#: the tile grid share one, so a C-order pass computes only a handful.
WEIGHT_CACHE = 4


@dataclass
class InferencePlan:
    """Everything that fixes the output of a run (stored as ``plan.json``)."""

    image: str
    level: int | None
    model: str
    model_digest: str
    spatial_dims: int
    shape: tuple[int, ...]
    channels: int
    num_classes: int
    patch: tuple[int, ...]
    step: tuple[int, ...]
    block: tuple[int, ...]
    batch: int
    flips: bool
    tissue: str
    probabilities: bool
    spacing: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    tissue_factor: tuple[float, ...] = ()
    version: int = PLAN_VERSION

    def grid(self) -> Grid:
        return Grid(self.shape, self.patch, self.step, self.block)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, name: str = "plan.json") -> InferencePlan:
        try:
            data = json.loads(text)
            if data.get("version") != PLAN_VERSION:
                raise ValueError(f"version {data.get('version')}")
            for key in ("shape", "patch", "step", "block", "spacing", "tissue_factor"):
                data[key] = tuple(data[key])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{name}: not a tiled-inference plan ({exc})") from None


def model_digest(path: str | Path) -> str:
    """SHA-256 of a model file (or of the files of a model folder)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _wrapped_array(data: Any) -> Any:
    """The array-like a dask array made by ``dask.array.from_array`` reads from, else None.

    Only a graph of exactly that wrapper (one layer holding the object, one slicing it)
    with the same shape and dtype qualifies; anything computed on top (casts, stacks,
    transposes) is read through dask.
    """
    try:
        layers = data.dask.layers
        originals = [layer for name, layer in layers.items() if str(name).startswith("original-")]
        if len(layers) != 2 or len(originals) != 1:
            return None
        values = list(originals[0].mapping.values())
        if len(values) != 1:
            return None
        wrapped = values[0]
        if tuple(wrapped.shape) != tuple(data.shape) or np.dtype(wrapped.dtype) != data.dtype:
            return None
        return wrapped if hasattr(wrapped, "__getitem__") else None
    except (AttributeError, TypeError):
        return None


class ImageSource:
    """Reads float32 boxes ``(channels, *spatial)`` of an image lazily via :mod:`unified_framework.io`."""

    def __init__(self, image: str, level: int | None = None) -> None:
        from ..io import open_volume

        self.name = image
        self.volume = open_volume(image, level=level)
        self.colour = "c" in (self.volume.axes or "")
        data = self.volume.data
        self.shape = tuple(int(s) for s in (data.shape[:-1] if self.colour else data.shape))
        self.channels = int(data.shape[-1]) if self.colour else 1
        self.spacing = tuple(float(s) for s in (self.volume.spacing or (1.0,) * len(self.shape)))

        # dask builds and orders a graph for every read (~15 ms a block): read through the
        # array it wraps where it is a plain wrapper (TIFF tiles, Zarr and HDF5 chunks)
        self._direct = _wrapped_array(data)

    def read(self, box: Sequence[slice]) -> np.ndarray:
        """The box as float32 ``(channels, *box)``."""
        if self._direct is not None:
            block = self._direct[tuple(box)]
        else:
            block = self.volume.data[tuple(box)]
        if hasattr(block, "compute"):
            block = block.compute(scheduler="synchronous")
        block = np.asarray(block, dtype=np.float32)
        return np.moveaxis(block, -1, 0) if self.colour else block[None]

    def low_resolution(self, max_side: int = 1024) -> tuple[np.ndarray, int | None]:
        """The smallest pyramid level with sides >= 64 (else a strided copy), channel axis."""
        levels = self.volume.metadata.get("levels") or []
        if len(levels) > 1 and self.volume.metadata.get("level", 0) == 0:
            from ..io import open_volume

            pick = len(levels) - 1
            while pick > 0 and min(levels[pick]["shape"][: len(self.shape)]) < 64:
                pick -= 1
            if pick > 0:
                path, _, _ = self.name.partition("::")
                low = open_volume(path, level=pick).data
                low = np.asarray(
                    low.compute(scheduler="synchronous") if hasattr(low, "compute") else low
                )
                return low, (low.ndim - 1 if self.colour else None)
        low, _ = low_resolution(self.volume.data, len(self.shape), max_side)
        return low, (low.ndim - 1 if self.colour else None)


def _choose_block(
    model: SegmentationModel,
    shape: Sequence[int],
    patch: Sequence[int],
    channels: int,
    budget: int,
    flips: bool,
    block_size: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], int]:
    """Largest block (tiles per axis) and batch that fit ``budget`` bytes; InputError if one tile does not."""
    classes = model.num_classes
    tile = patch_memory(model, patch, 1) * (2 if flips else 1)

    def fixed(block: Sequence[int]) -> int:
        box = [min(b + p, s) for b, p, s in zip(block, patch, shape)]
        # sums over the block's extent (block + halo) and the input box; the contiguous
        # result, cached weight sums and labels of the block
        extent, inner = math.prod(box), math.prod(block)
        return 4 * (classes + channels) * extent + (4 * (classes + WEIGHT_CACHE) + 2) * inner

    smallest = fixed(patch) + tile
    if smallest > budget:
        raise InputError(
            f"memory budget {budget / 2**20:.0f} MB is too small for one tile of {tuple(patch)} "
            f"(needs about {math.ceil(smallest / 2**20)} MB); raise --budget or choose a smaller --patch"
        )
    if block_size is not None:
        block = tuple(min(int(b), s) for b, s in zip(block_size, shape))
        if len(block) != len(shape) or min(block) < 1:
            raise InputError(f"block {tuple(block_size)}: expected {len(shape)} positive sides")
        if fixed(block) + tile > budget:
            raise InputError(
                f"block {block} needs about {math.ceil((fixed(block) + tile) / 2**20)} MB, more than the budget "
                f"{budget / 2**20:.0f} MB; choose a smaller --block or raise --budget"
            )
    else:
        for k in range(MAX_BLOCK_TILES.get(len(patch), 2), 0, -1):
            block = tuple(min(p * k, s) for p, s in zip(patch, shape))
            if fixed(block) + tile <= budget:
                break
    tiles_per_block = math.prod(math.ceil(b / p) * 2 for b, p in zip(block, patch))
    batch = max(1, min((budget - fixed(block)) // tile, MAX_BATCH, tiles_per_block))
    return block, int(batch)


def plan_inference(
    model_path: str | Path,
    image: str,
    model: SegmentationModel,
    *,
    level: int | None = None,
    patch: Sequence[int] | None = None,
    overlap: float = 0.5,
    flips: bool = False,
    budget: int = DEFAULT_BUDGET,
    tissue: str = "auto",
    probabilities: bool = True,
    block: Sequence[int] | None = None,
    source: ImageSource | None = None,
) -> tuple[InferencePlan, TissueMask | None]:
    """Check the inputs and fix tiles, blocks and batch; nothing is written.

    Parameters
    ----------
    model_path : path-like
        The model file (identifies the run by its digest).
    image : str
        What :func:`unified_framework.io.read_volume` opens.
    model : SegmentationModel
    level : int, optional
        Pyramid level of a slide.
    patch : sequence of int, optional
        Tile size (default: the model's).
    overlap : float
        Fraction of a tile shared with its neighbour (0.5: nnU-Net's and MONAI's usual choice).
    flips : bool
        Test-time augmentation: average over all flips of the spatial axes (2**dims predictions).
    budget : int
        Working memory of one process in bytes (input box, accumulators, one batch).
    tissue : str
        ``auto`` (``dark`` for colour slides, else ``off``), ``dark``, ``bright`` or ``off``.
    probabilities : bool
        Store the blended probabilities (else labels only).
    block : sequence of int, optional
        Output block (chunk) size; default the largest the budget allows.

    Raises
    ------
    InputError
        A model that does not fit the image (dimensions, channels), a tile larger than
        the image or not a multiple of the model's divisor, a budget too small for one tile.

    Examples
    --------
    >>> plan, mask = plan_inference("m.pt", "slide.tif", model, budget=512 * 2**20)  # doctest: +SKIP
    """
    image = str(image)
    source = source or ImageSource(image, level)
    check_model_fits(model, source.shape, source.channels, image)
    patch = tuple(int(p) for p in (patch or model.patch_size))
    if len(patch) != len(source.shape):
        raise InputError(f"patch {patch}: expected {len(source.shape)} sides for {image}")
    for p, s, d in zip(patch, source.shape, model.divisor):
        if p < 1 or p % d:
            raise InputError(
                f"patch {patch}: each side must be a positive multiple of {tuple(model.divisor)} for this model"
            )
        if p > s:
            raise InputError(
                f"{image}: tile size {patch} is larger than the image {source.shape}; choose --patch <= the image size"
            )
    step = step_of(patch, overlap)
    block, batch = _choose_block(model, source.shape, patch, source.channels, budget, flips, block)
    mask = None
    if tissue == "auto":
        tissue = "dark" if source.colour and len(source.shape) == 2 else "off"
    if tissue != "off":
        low, channel_axis = source.low_resolution()
        mask = detect_tissue(low, source.shape, tissue, channel_axis)
    plan = InferencePlan(
        image=image,
        level=level,
        model=str(Path(model_path).absolute()),
        model_digest=model_digest(model_path),
        spatial_dims=len(source.shape),
        shape=source.shape,
        channels=source.channels,
        num_classes=model.num_classes,
        patch=patch,
        step=step,
        block=block,
        batch=batch,
        flips=flips,
        tissue=tissue,
        probabilities=probabilities,
        spacing=source.spacing,
        class_names=list(
            getattr(model, "class_names", []) or [f"class {i}" for i in range(model.num_classes)]
        ),
        tissue_factor=mask.factor if mask is not None else (),
    )
    if model.num_classes > 254:
        raise InputError(
            f"model has {model.num_classes} classes; labels are stored as uint8 (at most 254, 255 marks missing)"
        )
    return plan, mask


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on ``folder/lock`` (array tasks prepare the same folder at once)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(
    work: str | Path,
    model_path: str | Path,
    image: str,
    model: SegmentationModel | None = None,
    **settings: Any,
) -> InferencePlan:
    """Create the work folder (plan, tissue mask, empty store) or reuse a matching one.

    A folder that already holds a plan for the same image and model is resumed with
    its stored plan (settings given now are then ignored); one for another image or
    model is refused.
    """
    work, image = Path(work), str(image)
    fresh = not work.exists()
    try:
        return _prepare_locked(work, model_path, image, model, settings)
    except BaseException:
        # Input refused (or interrupted) before anything was planned: leave no empty work
        # folder behind, so the next try starts as clean as the first.
        if fresh and work.is_dir() and {p.name for p in work.iterdir()} <= {"lock"}:
            shutil.rmtree(work, ignore_errors=True)
        raise


def _prepare_locked(
    work: Path,
    model_path: str | Path,
    image: str,
    model: SegmentationModel | None,
    settings: dict[str, Any],
) -> InferencePlan:
    with _locked(work):
        existing = work / "plan.json"
        if existing.is_file():
            plan = InferencePlan.from_json(existing.read_text(), str(existing))
            if plan.image != image or plan.model_digest != model_digest(model_path):
                raise InputError(
                    f"{work}: holds a run of {plan.image} with model {plan.model}; choose another --work-dir or delete it"
                )
            return plan
        model = model or load_model_for(model_path, image, settings.get("level"))
        plan, mask = plan_inference(model_path, image, model, **settings)
        _create_store(work / "result.zarr", plan)
        if mask is not None:
            with atomic_path(work / "tissue.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, mask.mask)
        write_text_atomic(existing, plan.to_json())  # last: a plan means a complete folder
        return plan


def load_model_for(
    model_path: str | Path, image: str, level: int | None = None, device: Any = "cpu"
) -> SegmentationModel:
    """The model of ``model_path`` for the dimensionality of ``image`` (a 2D model predicts a
    volume slice by slice). Open it once per run: a bioimage.io package is validated on
    every load."""
    return load_model(
        model_path, spatial_dims=len(ImageSource(str(image), level).shape), device=device
    )


def _create_store(path: Path, plan: InferencePlan) -> None:
    import zarr
    from numcodecs import Blosc

    if path.exists():
        shutil.rmtree(path)
    group = zarr.open_group(str(path), mode="w")
    compressor = Blosc("zstd", 3, Blosc.BITSHUFFLE)
    if plan.probabilities:
        probs = group.create_dataset(
            "probabilities",
            shape=(plan.num_classes, *plan.shape),
            chunks=(plan.num_classes, *plan.block),
            dtype="float32",
            compressor=compressor,
            # A lost chunk must not read as a valid answer: NaN/255 never verify.
            fill_value=np.nan,
            write_empty_chunks=True,
        )
        probs.attrs.update(
            {"class_names": plan.class_names, "spacing": list(plan.spacing), "unit": "micrometer"}
        )
    labels = group.create_dataset(
        "0",
        shape=plan.shape,
        chunks=plan.block,
        dtype="uint8",
        compressor=compressor,
        fill_value=255,
        write_empty_chunks=True,
    )
    labels.attrs.update(
        {"spacing": list(plan.spacing), "unit": "micrometer", "class_names": plan.class_names}
    )


def _name(index: Sequence[int]) -> str:
    return "_".join(str(i) for i in index)


def _within(box: Sequence[slice], origin: Sequence[slice]) -> tuple[slice, ...]:
    """``box`` (image coordinates) relative to the start of ``origin``."""
    return tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, origin))


def _overlap(a: Sequence[slice], b: Sequence[slice]) -> tuple[slice, ...]:
    return tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))


class _Run:
    """One process's view of a prepared work folder: model, source, weights, store.

    A block is computed in two steps. :meth:`predict_own` predicts the block's own tiles
    (those starting in it) and sums their weighted probabilities over the block's extent
    (the block and a halo on its high sides); the halo parts go to ``halo/<block>-<receiver>``
    (checked files). :meth:`finalize` adds the halos the block receives from the blocks
    before it, divides by the summed weights and writes the block's Zarr chunks and
    marker. When those halos are not there yet (a SLURM array task whose neighbour runs in
    another task), the block's own sums wait in ``partial/<block>`` for a later
    :meth:`finalize` (by the same task at its end, or by :func:`finish`).
    """

    def __init__(
        self, work: Path, model: SegmentationModel | None = None, device: Any = "cpu"
    ) -> None:
        import zarr

        self.work = work
        self.plan = InferencePlan.from_json(
            (work / "plan.json").read_text(), str(work / "plan.json")
        )
        self._model = model
        self.device = device
        self.source = ImageSource(self.plan.image, self.plan.level)
        if self.source.shape != self.plan.shape:
            raise InputError(
                f"{self.plan.image}: shape {self.source.shape} differs from the plan's {self.plan.shape}; it changed since the run began"
            )
        self.grid = self.plan.grid()
        self.weights = gaussian_weights(self.plan.patch)
        self.mask = (
            TissueMask(np.load(work / "tissue.npy"), self.plan.tissue_factor)
            if (work / "tissue.npy").is_file()
            else None
        )
        group = zarr.open_group(str(work / "result.zarr"), mode="r+")
        self.labels = group["0"]
        self.probs = group["probabilities"] if self.plan.probabilities else None
        self._weight_sums: OrderedDict[Any, np.ndarray] = OrderedDict()

    @property
    def model(self) -> SegmentationModel:
        """The model, loaded on first use (merging finished blocks needs none)."""
        if self._model is None:
            self._model = load_model(
                self.plan.model, spatial_dims=self.plan.spatial_dims, device=self.device
            )
        return self._model

    def tiles(self, index: Sequence[int]) -> list[tuple[int, ...]]:
        """The tiles block ``index`` predicts: those starting in it, less background ones."""
        tiles = self.grid.owned(index)
        if self.mask is not None:
            tiles = [t for t in tiles if self.mask.keeps(t, self.plan.patch)]
        return tiles

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        if not self.plan.flips:
            return self.model.predict(batch)
        dims = self.plan.spatial_dims
        total = None
        combos = [c for r in range(dims + 1) for c in _combinations(dims, r)]
        for axes in combos:
            flipped = np.flip(batch, tuple(2 + a for a in axes)) if axes else batch
            out = self.model.predict(np.ascontiguousarray(flipped))
            out = np.flip(out, tuple(2 + a for a in axes)) if axes else out
            total = out.copy() if total is None else total + out
        assert total is not None
        return total / np.float32(len(combos))

    def predict_own(self, index: Sequence[int]) -> tuple[np.ndarray, int]:
        """Weighted probability sums ``(classes, *extent)`` of the block's own tiles, and their number."""
        extent = self.grid.extent(index)
        patch = self.plan.patch
        acc = np.zeros(
            (self.plan.num_classes, *(e.stop - e.start for e in extent)), dtype=np.float32
        )
        tiles = self.tiles(index)
        if not tiles:
            return acc, 0
        lo = [min(t[a] for t in tiles) for a in range(len(patch))]
        hi = [max(t[a] for t in tiles) + patch[a] for a in range(len(patch))]
        data = self.source.read(tuple(slice(a, b) for a, b in zip(lo, hi)))
        size = self.plan.batch
        for first in range(0, len(tiles), size):
            group = tiles[first : first + size]
            # The batches are a function of the block alone (its tiles in C order, cut
            # every `size`), whichever process computes it: no padding needed.
            batch = np.empty((len(group), self.plan.channels, *patch), dtype=np.float32)
            for k, t in enumerate(group):
                batch[k] = data[
                    (slice(None), *(slice(s - o, s - o + p) for s, o, p in zip(t, lo, patch)))
                ]
            probs = self._predict(batch)
            if probs.dtype == np.float32 and probs.flags.writeable and probs.flags.c_contiguous:
                probs *= self.weights  # in place: one pass over the batch, no temporaries
            else:
                probs = probs.astype(np.float32) * self.weights
            for k, t in enumerate(group):
                box = tuple(
                    slice(s - e.start, s - e.start + p) for s, e, p in zip(t, extent, patch)
                )
                acc[(slice(None), *box)] += probs[k]
        return acc, len(tiles)

    def _halo_path(self, source: Sequence[int], target: Sequence[int]) -> Path:
        return self.work / "halo" / f"{_name(source)}-{_name(target)}"

    def _halo_box(self, source: Sequence[int], target: Sequence[int]) -> tuple[slice, ...]:
        return _overlap(self.grid.extent(source), self.grid.block_region(target))

    def write_halos(self, index: Sequence[int], acc: np.ndarray) -> None:
        """Store the parts of ``acc`` (over the block's extent) that fall in later blocks."""
        extent = self.grid.extent(index)
        receivers = self.grid.receivers(index)
        if receivers:
            (self.work / "halo").mkdir(exist_ok=True)
        for target in receivers:
            box = _within(self._halo_box(index, target), extent)
            write_checked(
                self._halo_path(index, target), np.ascontiguousarray(acc[(slice(None), *box)])
            )

    def has_halo(self, source: Sequence[int], target: Sequence[int]) -> bool:
        return self._halo_path(source, target).is_file()

    def read_halo(self, source: Sequence[int], target: Sequence[int]) -> np.ndarray:
        """Block ``source``'s sums over its overlap with block ``target``; recomputed if lost or damaged."""
        shape = (self.plan.num_classes, *(b.stop - b.start for b in self._halo_box(source, target)))
        size = 4 * math.prod(shape)
        data = read_checked(self._halo_path(source, target), size)
        if data is None:  # the same tiles in the same batches give the same sums
            logger.warning("block %s: halo for %s lost or damaged; recomputing it", source, target)
            acc, _ = self.predict_own(source)
            self.write_halos(source, acc)
            data = read_checked(self._halo_path(source, target), size)
            assert data is not None
        return np.frombuffer(data, dtype=np.float32, count=math.prod(shape)).reshape(shape)

    def _partial_path(self, index: Sequence[int]) -> Path:
        return self.work / "partial" / _name(index)

    def read_partial(self, index: Sequence[int]) -> np.ndarray | None:
        """The block's own sums stored while it waited for its neighbours' halos, if any."""
        region = self.grid.block_region(index)
        shape = (self.plan.num_classes, *(r.stop - r.start for r in region))
        data = read_checked(self._partial_path(index), 4 * math.prod(shape))
        if data is None:
            return None
        return np.frombuffer(data, dtype=np.float32, count=math.prod(shape)).reshape(shape).copy()

    def weight_sum(self, index: Sequence[int]) -> np.ndarray:
        """Summed Gaussian weights over block ``index`` of every (kept) tile touching it."""
        region = self.grid.block_region(index)
        starts = self.grid.touching_starts(index)
        key = None
        if self.mask is None:
            key = tuple(
                (r.stop - r.start, tuple(s - r.start for s in st)) for st, r in zip(starts, region)
            )
            cached = self._weight_sums.get(key)
            if cached is not None:
                self._weight_sums.move_to_end(key)
                return cached
        patch = self.plan.patch
        wsum = np.zeros(tuple(r.stop - r.start for r in region), dtype=np.float32)
        for t in itertools.product(*starts):
            if self.mask is not None and not self.mask.keeps(t, patch):
                continue
            tile = tuple(slice(s, s + p) for s, p in zip(t, patch))
            box = _overlap(tile, region)
            wsum[_within(box, region)] += self.weights[_within(box, tile)]
        if key is not None:
            self._weight_sums[key] = wsum
            while len(self._weight_sums) > WEIGHT_CACHE:
                self._weight_sums.popitem(last=False)
        return wsum

    def ready(self, index: Sequence[int]) -> bool:
        """Whether every halo block ``index`` receives is stored."""
        return all(self.has_halo(c, index) for c in self.grid.contributors(index))

    def finalize(self, index: Sequence[int], own: np.ndarray) -> None:
        """Add the received halos to the block's own sums (in place), normalise, store, mark."""
        region = self.grid.block_region(index)
        for source in self.grid.contributors(index):  # in C order: a fixed summation order
            box = _within(self._halo_box(source, index), region)
            own[(slice(None), *box)] += self.read_halo(source, index)
        wsum = self.weight_sum(index)
        covered = wsum > 0
        probs = np.empty(own.shape, dtype=np.float32)  # contiguous: what the Zarr chunk stores
        if covered.all():
            np.divide(own, wsum, out=probs)
        else:  # pixels only under skipped (background) tiles: class 0
            np.divide(own, np.where(covered, wsum, np.float32(1)), out=probs)
            probs[:, ~covered] = 0.0
            probs[0][~covered] = 1.0
        labels = _labels(probs)
        if self.probs is not None:
            self.probs[(slice(None), *region)] = probs
        self.labels[region] = labels
        crc_p = checksum(probs) if self.probs is not None else 0
        payload = checksum(labels).to_bytes(4, "little") + crc_p.to_bytes(4, "little")
        self.marker(index).parent.mkdir(exist_ok=True)
        write_checked(self.marker(index), payload)
        self._partial_path(index).unlink(missing_ok=True)

    def marker(self, index: Sequence[int]) -> Path:
        return self.work / "done" / _name(index)

    def _stored_crcs(self, index: Sequence[int]) -> bytes:
        region = self.grid.block_region(index)
        labels = np.ascontiguousarray(self.labels[region])
        crc = checksum(labels)
        crc_p = (
            checksum(np.ascontiguousarray(self.probs[(slice(None), *region)]))
            if self.probs is not None
            else 0
        )
        return crc.to_bytes(4, "little") + crc_p.to_bytes(4, "little")

    def run_block(self, index: Sequence[int], finalize: bool | None = True) -> int:
        """Predict one block's tiles (unless stored), then finish it or keep its sums; tiles predicted.

        ``finalize=True``: finish it now (halos lost on the way are recomputed).
        ``None``: finish it if its lower neighbours have stored their halos (checked
        after its own tiles), else store its own sums in ``partial/``; whichever of the
        block and its neighbours comes last finishes it. ``False``: store its sums.
        Afterwards the later blocks that waited only for this block's halos are finished.
        """
        own = self.read_partial(index)
        predicted = 0
        if own is None:
            acc, predicted = self.predict_own(index)
            self.write_halos(index, acc)  # first: a partial or a marker implies the halos
            own = acc[
                (slice(None), *(slice(0, r.stop - r.start) for r in self.grid.block_region(index)))
            ]
            if finalize is False or (finalize is None and not self.ready(index)):
                self._partial_path(index).parent.mkdir(exist_ok=True)
                write_checked(self._partial_path(index), np.ascontiguousarray(own))
                if finalize is None:
                    # a neighbour that stored the last halo before this file existed did
                    # not see it: look again (one of the two always sees the other)
                    self.finish_waiting(index)
                self._help_receivers(index)
                return predicted
        elif finalize is False or (finalize is None and not self.ready(index)):
            return 0
        self.finalize(index, own)
        self._help_receivers(index)
        return predicted

    def finish_waiting(self, index: Sequence[int]) -> bool:
        """Finish block ``index`` from its stored sums if every halo it needs is there now."""
        if not self._partial_path(index).is_file() or not self.ready(index):
            return False
        own = self.read_partial(index)
        if own is None:  # finished meanwhile by another process (that removes the file)
            return False
        # Two processes may finish the same block at once: they write the same bytes,
        # and the Zarr chunks, the marker and the removal are each atomic.
        self.finalize(index, own)
        return True

    def _help_receivers(self, index: Sequence[int]) -> None:
        for target in self.grid.receivers(index):
            self.finish_waiting(target)

    def is_done(self, index: Sequence[int], verify: bool = True) -> bool:
        """A checked marker, and the stored chunks match it (``verify``) or at least exist."""
        data = read_checked(self.marker(index), 8)
        if data is None:
            return False
        if verify:
            return data[:8] == self._stored_crcs(index)
        arrays = [self.labels] + ([self.probs] if self.probs is not None else [])
        return all(_chunk_key(a, index) in a.store for a in arrays)

    def shares(self, parts: int) -> list[list[tuple[int, ...]]]:
        """The blocks cut into ``parts`` runs in C order with about equal numbers of tiles each.

        Contiguous runs keep nearly every block's neighbours in the same share, so only
        the first blocks of a share wait for another share's halos.
        """
        blocks = self.grid.blocks()
        if parts == 1:
            return [blocks]
        cost = [len(self.tiles(b)) + 1 for b in blocks]  # +1: a block's reads and writes
        total, before = sum(cost), 0
        shares: list[list[tuple[int, ...]]] = [[] for _ in range(parts)]
        for b, c in zip(blocks, cost):
            shares[min(parts - 1, before * parts // total)].append(b)
            before += c
        return shares


def _labels(probs: np.ndarray) -> np.ndarray:
    """``argmax`` over the classes (the first on ties) as uint8, class by class: ~2x numpy's."""
    labels = np.zeros(probs.shape[1:], dtype=np.uint8)
    best = probs[0].copy()
    better = np.empty(probs.shape[1:], dtype=bool)
    for c in range(1, probs.shape[0]):
        np.greater(probs[c], best, out=better)
        np.copyto(labels, np.uint8(c), where=better)
        np.maximum(best, probs[c], out=best)
    return labels


def _chunk_key(array: Any, index: Sequence[int]) -> str:
    """Store key of the chunk of Zarr (v2) ``array`` that holds block ``index`` (classes first)."""
    coords = ([0] if array.ndim > len(index) else []) + list(index)
    separator = getattr(array, "_dimension_separator", None) or "."
    return (array.path + "/" if array.path else "") + separator.join(map(str, coords))


def _combinations(n: int, r: int) -> list[tuple[int, ...]]:
    return list(itertools.combinations(range(n), r))


#: Runs opened by this process (dask workers keep theirs between tasks).
_RUNS: dict[str, _Run] = {}


def _open_run(
    work: str | Path, model: SegmentationModel | None = None, device: Any = "cpu"
) -> _Run:
    key = str(Path(work).absolute())
    run = _RUNS.get(key)
    if run is None or (model is not None and run._model is not model):
        run = _RUNS[key] = _Run(Path(key), model, device)
    return run


#: Entered once by the first block a dask worker process computes, and kept: the worker
#: exists to compute blocks, and each would otherwise page-fault its buffers in afresh.
_WORKER_HEAP: contextlib.ExitStack | None = None


def _block_task(work: str, index: tuple[int, ...], model: Any, device: Any, threads: int) -> int:
    """A block on a dask worker (the run is opened once per worker process); tiles predicted."""
    global _WORKER_HEAP
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if _WORKER_HEAP is None:
        _WORKER_HEAP = contextlib.ExitStack()
        _WORKER_HEAP.enter_context(reuse_freed_memory())
    return _open_run(work, model, device).run_block(index, None)


@dataclass
class RunReport:
    """What :func:`run_blocks` did."""

    blocks_total: int = 0
    blocks_computed: int = 0
    blocks_reused: int = 0
    blocks_waiting: int = 0
    tiles_predicted: int = 0
    tiles_total: int = 0
    tiles_skipped: int = 0
    seconds: float = 0.0


def pending_blocks(
    work: str | Path,
    model: SegmentationModel | None = None,
    part: int = 0,
    parts: int = 1,
    device: Any = "cpu",
) -> tuple[list[tuple[int, ...]], int]:
    """Blocks of share ``part`` of ``parts`` still to compute (verified markers are skipped), and the share's size."""
    if not 0 <= part < parts:
        raise InputError(f"part {part}: expected 0..{parts - 1}")
    run = _open_run(work, model, device)
    mine = run.shares(parts)[part]
    return [b for b in mine if not run.is_done(b)], len(mine)


def run_blocks(
    work: str | Path,
    model: SegmentationModel | None = None,
    *,
    workers: int = 1,
    part: int = 0,
    parts: int = 1,
    cluster: Any = None,
    threads: int = 1,
    device: Any = "cpu",
    progress: Callable[[int], None] | None = None,
) -> RunReport:
    """Compute the unfinished blocks of share ``part``/``parts`` (a SLURM array task's), here or on dask workers.

    Parameters
    ----------
    work : path-like
        A folder made by :func:`prepare`.
    model : SegmentationModel, optional
        Default: loaded from the plan's model file (in every worker).
    workers : int
        1: in this process; more: a dask ``LocalCluster`` of that many single-threaded
        processes (unless ``cluster`` is given). A block is finished once the blocks whose
        tiles reach into it (its lower neighbours) have stored their halos.
    part, parts : int
        Which share of the blocks (a run of about ``1/parts`` of the tiles in C order):
        a SLURM array task's. Blocks that need halos from another share that is not
        stored yet keep their sums in the work folder; this call finishes them at its
        end if the halos have come meanwhile, else :func:`finish` does.
    cluster : dask cluster, optional
        E.g. a dask-jobqueue ``SLURMCluster``, already scaled.
    threads : int
        Torch threads per worker process.
    progress : callable, optional
        Called with the number of blocks finished since the last call.
    """
    started = time.perf_counter()
    todo, share = pending_blocks(work, model, part, parts, device)
    run = _open_run(work, model, device)
    report = RunReport(blocks_total=share, blocks_reused=share - len(todo))
    report.tiles_total = run.grid.n_tiles
    if run.mask is not None:
        report.tiles_skipped = sum(
            not run.mask.keeps(t, run.plan.patch) for t in run.grid.all_tiles()
        )

    if workers <= 1 and cluster is None:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        # Every block allocates the same large buffers again (sums, Zarr chunks, batches):
        # kept mapped, they are not page-faulted in afresh for each block.
        try:
            with reuse_freed_memory():
                for index in todo:  # C order: a block's lower neighbours come first
                    # one share: its halos are all there (lost ones are recomputed);
                    # several: a block next to another share may have to wait for it
                    report.tiles_predicted += run.run_block(index, True if parts == 1 else None)
                    if progress:
                        progress(1)
        finally:
            torch.set_num_threads(previous)
    elif todo:
        report.tiles_predicted = _run_dask(
            str(Path(work).absolute()), todo, model, workers, cluster, threads, device, progress
        )
    for index in todo:  # blocks that waited for another share's halos
        if run.is_done(index, verify=False) or run.finish_waiting(index):
            report.blocks_computed += 1
        else:
            report.blocks_waiting += 1
    report.seconds = time.perf_counter() - started
    return report


def _run_dask(
    work: str,
    todo: list[tuple[int, ...]],
    model: Any,
    workers: int,
    cluster: Any,
    threads: int,
    device: Any,
    progress: Callable[[int], None] | None,
) -> int:
    """Blocks on dask workers, one task each; the number of tiles predicted.

    No task waits for another: a block whose lower neighbours have not stored their
    halos yet keeps its sums, and the last of them to store its halo finishes it. The
    blocks are handed out as interleaved runs (one per worker, in C order), so that the
    workers mostly work far apart and a block's neighbours are usually done before it.
    """
    from distributed import Client, LocalCluster, as_completed

    own = cluster is None
    if own:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            memory_limit=0,
        )
    try:
        with Client(cluster) as client:
            shared = client.scatter(model, broadcast=True) if model is not None else None
            runs = max(1, workers, len(client.scheduler_info().get("workers", {})))
            share = math.ceil(len(todo) / runs)
            pieces = [todo[k * share : (k + 1) * share] for k in range(runs)]
            order = [b for group in itertools.zip_longest(*pieces) for b in group if b is not None]
            tag = f"{os.getpid()}-{time.monotonic_ns()}"
            futures = [
                client.submit(
                    _block_task,
                    work,
                    index,
                    shared,
                    device,
                    threads,
                    pure=False,
                    key=f"infer-block-{_name(index)}-{tag}",
                )
                for index in order  # submission order is dask's order among ready tasks
            ]
            tiles = 0
            for future in as_completed(futures):
                tiles += future.result()
                if progress:
                    progress(1)
            return tiles
    finally:
        if own:
            cluster.close()


def finish(work: str | Path, out: str | Path, keep_work: bool = False) -> Path:
    """Finish waiting blocks, check every block, build the pyramid (2D) and OME-Zarr metadata, move the result to ``out``.

    Blocks whose own tiles are predicted but that waited for another array task's halos
    (their sums in ``partial/``) are finished here; that needs no model.

    Raises
    ------
    InputError
        Blocks not (or no longer) finished: run the missing parts again.
    """
    import zarr

    work, out = Path(work), Path(out)
    run = _Run(work)
    if out.exists():
        raise InputError(f"{out}: already exists; choose another --out or remove it")
    # markers and chunks present (a resume compares the chunks' CRC-32s; here that would
    # decode the whole output once more, serially, in the merge job)
    open_blocks = [b for b in run.grid.blocks() if not run.is_done(b, verify=False)]
    missing = [b for b in open_blocks if not run._partial_path(b).is_file()]
    if missing:
        raise InputError(
            f"{work}: {len(missing)} of {len(run.grid.blocks())} blocks are not finished (first {missing[0]}); run the inference (or the missing array tasks) again"
        )
    for index in open_blocks:  # C order: their halos are all stored
        run.run_block(index)
    plan = run.plan
    group = zarr.open_group(str(work / "result.zarr"), mode="r+")
    levels = [plan.spacing]
    if plan.spatial_dims == 2:
        level = 0
        while max(group[str(level)].shape) > PYRAMID_MIN_SIDE and level < 10:
            _downsample(group, level)
            level += 1
            levels.append(tuple(s * 2**level for s in plan.spacing))
    axes_names = "zyx"[-plan.spatial_dims :]
    group.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "name": "labels",
                    "axes": [
                        {"name": a, "type": "space", "unit": "micrometer"} for a in axes_names
                    ],
                    "datasets": [
                        {
                            "path": str(i),
                            "coordinateTransformations": [{"type": "scale", "scale": list(s)}],
                        }
                        for i, s in enumerate(levels)
                    ],
                    "type": "nearest",
                }
            ],
            "mdlma_inference": {
                "image": plan.image,
                "model": plan.model,
                "model_digest": plan.model_digest,
                "patch": list(plan.patch),
                "step": list(plan.step),
                "flips": plan.flips,
                "tissue": plan.tissue,
                "class_names": plan.class_names,
            },
        }
    )
    with atomic_path(out) as tmp:
        os.rename(work / "result.zarr", tmp)
    if not keep_work:
        remove_work_folder(work)
    return out


def _downsample(group: Any, level: int) -> None:
    """Level ``level + 1`` of the label pyramid: every second pixel, chunk by chunk."""
    from numcodecs import Blosc

    source = group[str(level)]
    shape = tuple(math.ceil(s / 2) for s in source.shape)
    chunks = tuple(min(c, s) for c, s in zip(source.chunks, shape))
    target = group.create_dataset(
        str(level + 1),
        shape=shape,
        chunks=chunks,
        dtype=source.dtype,
        compressor=Blosc("zstd", 3, Blosc.BITSHUFFLE),
        overwrite=True,
    )
    target.attrs.update({**source.attrs, "spacing": [s * 2 for s in source.attrs["spacing"]]})
    counts = [math.ceil(s / c) for s, c in zip(shape, chunks)]
    for index in itertools.product(*(range(c) for c in counts)):
        region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape))
        target[region] = source[tuple(slice(2 * r.start, 2 * r.stop, 2) for r in region)]


def infer(
    model_path: str | Path,
    image: str,
    out: str | Path,
    model: SegmentationModel | None = None,
    *,
    work_dir: str | Path | None = None,
    workers: int = 1,
    cluster: Any = None,
    threads: int = 1,
    device: Any = "cpu",
    keep_work: bool = False,
    progress: Callable[[int], None] | None = None,
    **settings: Any,
) -> tuple[Path, RunReport]:
    """Tiled inference of ``image`` with a model file, resumable, on one process or dask workers.

    Parameters
    ----------
    model_path : path-like
        The model file (SUN ``.pt``, bioimage.io package, ...); also identifies the run.
    image : str
        Any image :func:`unified_framework.io.read_volume` opens (``file.h5::/data``, ``slide.tif::0``).
    out : path-like
        The result Zarr (OME-Zarr labels pyramid ``0, 1, ...`` and ``probabilities``).
    model : SegmentationModel, optional
        Already opened (default: :func:`load_model` of ``model_path``).
    work_dir : path-like, optional
        Default ``OUT.work`` beside the output; a killed run resumes from it.
    workers, cluster, threads, device, progress
        See :func:`run_blocks`.
    **settings
        ``level, patch, overlap, flips, budget, tissue, probabilities`` of :func:`plan_inference`.

    Examples
    --------
    >>> infer("model.pt", "slide.ome.tif", "seg.zarr", workers=2, flips=True)  # doctest: +SKIP
    """
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose another --out or remove it")
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    if model is None and workers <= 1 and cluster is None:  # once, to plan and to predict
        model = load_model_for(model_path, str(image), settings.get("level"), device)
    prepare(work, model_path, image, model, **settings)
    report = run_blocks(
        work,
        model,
        workers=workers,
        cluster=cluster,
        threads=threads,
        device=device,
        progress=progress,
    )
    finish(work, out, keep_work=keep_work)
    _RUNS.pop(str(work.absolute()), None)
    return out, report


def predict_array(
    model: SegmentationModel,
    image: np.ndarray,
    *,
    patch: Sequence[int] | None = None,
    overlap: float = 0.5,
    flips: bool = False,
) -> np.ndarray:
    """Reference sliding-window inference of an in-memory image ``(channels, *spatial)``: whole-image accumulators.

    The same grid, weights and summation order as the blockwise engine (MONAI's
    ``sliding_window_inference`` with a Gaussian importance map); for tests, the predict
    service and images that fit in memory.

    Examples
    --------
    >>> import torch
    >>> from .model import TorchModule
    >>> net = TorchModule(torch.nn.Conv2d(1, 2, 1), 2, 1, 2, (8, 8))
    >>> predict_array(net, np.zeros((1, 20, 20), np.float32)).shape
    (2, 20, 20)
    """
    image = np.asarray(image, dtype=np.float32)
    spatial = image.shape[1:]
    check_model_fits(model, spatial, image.shape[0], "image")
    patch = tuple(patch or model.patch_size)
    grid = Grid(spatial, patch, step_of(patch, overlap), spatial)
    weights = gaussian_weights(patch)
    acc = np.zeros((model.num_classes, *spatial), dtype=np.float32)
    wsum = np.zeros(spatial, dtype=np.float32)
    dims = len(spatial)
    combos = [c for r in range(dims + 1) for c in _combinations(dims, r)] if flips else [()]
    for t in grid.all_tiles():
        region = tuple(slice(s, s + p) for s, p in zip(t, patch))
        batch = image[(slice(None), *region)][None]
        total = None
        for axes in combos:
            flipped = np.flip(batch, tuple(2 + a for a in axes)) if axes else batch
            out = model.predict(np.ascontiguousarray(flipped))
            out = np.flip(out, tuple(2 + a for a in axes)) if axes else out
            total = out.copy() if total is None else total + out
        assert total is not None
        acc[(slice(None), *region)] += (total[0] / np.float32(len(combos))) * weights
        wsum[region] += weights
    return acc / wsum


__all__ = [
    "DEFAULT_BUDGET",
    "ImageSource",
    "InferencePlan",
    "RunReport",
    "finish",
    "infer",
    "load_model_for",
    "model_digest",
    "pending_blocks",
    "plan_inference",
    "predict_array",
    "prepare",
    "run_blocks",
]
