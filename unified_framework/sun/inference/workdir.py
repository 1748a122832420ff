"""Resumable and splittable SUN prediction through a work directory.

The work is cut into *pieces*, one per (axis, slab): a slab is a contiguous range of
the axis' work units (see :mod:`unified_framework.sun.axes`); inside a piece the units
are processed in *groups* small enough for the memory budget. Layout::

    WORK/plan.json              volume, model digest, axes, slabs, groups (fixed at the start)
    WORK/accumulator.zarr       the running accumulator (uint16, chunked)
    WORK/accumulator.zarr/manifest.json
                                its chunks (size, CRC-32) and the groups they hold
    WORK/input/<channel>/       raw, checksummed copies of the input chunks read so far (see .mirror)
    WORK/pieces/<piece>.zarr    split mode only: the piece's own votes (with its manifest)
    WORK/outputs/               fused outputs before they are written to their destination

*Single mode* (``mdlma sun predict``) adds every group straight into the accumulator.
*Split mode* (``--piece``, e.g. one SLURM array task per piece) writes each piece into
its own store; ``mdlma sun merge`` then adds the stores to the accumulator. The
accumulator sums integers (:mod:`.accumulator`), so both modes, any order of pieces and
any number of kills and restarts give bit-identical outputs. Progress is committed in
each store's manifest atomically after the chunks it describes, and chunks carry the
number of the last unit added to them, so a killed run resumes without losing or
repeating anything. A resumed run verifies every recorded chunk; the groups that voted
on a missing or damaged one are run again (``docs/reliability.md``). The directory is
removed through :func:`~unified_framework.utils.workdir_manifest.remove_work_folder`,
so a clean-up killed half-way is never taken for resumable work.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...utils.atomic import atomic_path, write_text_atomic
from ...utils.heap import reuse_freed_memory
from ...utils.workdir_manifest import Manifest, discard_if_invalid, remove_work_folder
from ..axes import axis_grid, parse_axes
from ..slice_model import SliceModel
from ..votes import MAX_AXES
from .accumulator import DEFAULT_CHUNK, MAX_UNITS, ZarrAccumulator, chunk_regions, fuse
from .budget import DEFAULT_MEMORY_BUDGET, MemoryBudget
from .mirror import ChunkMirror, source_chunks
from .predictor import (
    RunStats,
    VolumeSource,
    group_tiles,
    group_units_by_axis,
    unit_groups,
    vote_unit,
)

logger = logging.getLogger(__name__)

#: 2: uint16 accumulator (votes.py encoding); 3: manifests with checksums. Older work directories are refused.
PLAN_VERSION = 3
#: Longest time (s) between checkpoints of a piece: what a killed run may have to redo.
CHECKPOINT_SECONDS = 300.0
SINGLE, SPLIT = "single", "split"


@dataclass(frozen=True)
class Piece:
    """One independently runnable part of a prediction: an axis and a slab of its units."""

    index: int
    axis: str
    slab: int
    groups: tuple[tuple[int, int], ...]
    first_unit: int

    @property
    def name(self) -> str:
        """``AXIS:SLAB``, as accepted by ``--piece``."""
        return f"{self.axis}:{self.slab}"

    @property
    def key(self) -> str:
        """File-name-safe identifier."""
        return f"{self.index:03d}_{self.axis.replace('+', 'p').replace('-', 'm')}_{self.slab}"


@dataclass
class Plan:
    """Everything that fixes the arithmetic of a prediction (see module docs)."""

    volume: str
    shape: tuple[int, int, int]
    channels: int
    dtype: str
    spacing: tuple[float, float, float]
    model_digest: str
    class_names: list[str]
    axes: tuple[str, ...]
    slabs: int
    chunks: tuple[int, int, int]
    memory_budget: int
    mode: str = SINGLE
    pieces: list[Piece] = field(default_factory=list)
    #: World geometry of the input (see docs/io.md), given to the outputs.
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = (
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
    )

    @property
    def budget(self) -> MemoryBudget:
        """The parts of :attr:`memory_budget` (bytes) for this volume and chunk shape."""
        return MemoryBudget.for_file_run(
            self.memory_budget, self.shape, self.chunks, len(self.class_names)
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = PLAN_VERSION
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, name: str) -> Plan:
        try:
            data = json.loads(text)
            version = data.pop("version", None)
            if version != PLAN_VERSION:
                raise ValueError(f"plan version {version}, this mdlma reads version {PLAN_VERSION}")
            data["pieces"] = [
                Piece(
                    p["index"],
                    p["axis"],
                    p["slab"],
                    tuple(map(tuple, p["groups"])),
                    p["first_unit"],
                )
                for p in data["pieces"]
            ]
            for key in ("shape", "spacing", "axes", "chunks", "origin"):
                if key in data:
                    data[key] = tuple(data[key])
            if "direction" in data:
                data["direction"] = tuple(tuple(row) for row in data["direction"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"{name}: damaged SUN plan ({exc}); remove the work directory and start again"
            ) from None

    def arithmetic(self) -> dict[str, Any]:
        """The fields that two runs must share to add into the same accumulator."""
        data = asdict(self)
        # Where the volume lies changes no sum (and plans of earlier versions lack it).
        for key in ("volume", "mode", "memory_budget", "origin", "direction"):
            data.pop(key)
        return json.loads(json.dumps(data))

    def find_piece(self, spec: str | int) -> Piece:
        """A piece by array index (int or digits) or ``AXIS[:SLAB]``."""
        text = str(spec).strip()
        if text.isdigit():
            index = int(text)
            if index >= len(self.pieces):
                raise InputError(
                    f"piece index {index}: the plan has {len(self.pieces)} pieces (0..{len(self.pieces) - 1})"
                )
            return self.pieces[index]
        axis, _, slab = text.partition(":")
        for piece in self.pieces:
            if piece.axis == axis and str(piece.slab) == (slab or "0"):
                return piece
        names = ", ".join(p.name for p in self.pieces[:12]) + (
            " ..." if len(self.pieces) > 12 else ""
        )
        raise InputError(f"piece {text!r}: not in the plan; expected AXIS[:SLAB] such as {names}")


def make_plan(
    source: VolumeSource,
    model: SliceModel,
    model_digest: str,
    axes: str | int | Iterable[str] | None = None,
    *,
    slabs: int = 1,
    chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    mode: str = SINGLE,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Any = None,
) -> Plan:
    """Cut a prediction into pieces (axis x slab) and groups.

    Raises
    ------
    InputError
        Bad axes, slab count or chunk shape, or a volume the model refuses.
    """
    axes = parse_axes(axes if axes is not None else model.axes)
    if len(axes) > MAX_AXES:
        raise InputError(f"axes: at most {MAX_AXES} axes can vote")
    if slabs < 1:
        raise InputError(f"slabs: {slabs}; expected a positive number of slabs per axis")
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != 3 or min(chunks) < 1:
        raise InputError(f"chunks: {chunks}; expected 3 positive sizes")
    model.check_volume(source.full_shape, source.dtype, source.name)
    classes = model.num_classes
    pieces: list[Piece] = []
    unit = 0
    limits = group_units_by_axis(
        source.shape,
        axes,
        classes,
        len(source.channels),
        MemoryBudget.for_file_run(memory_budget, source.shape, chunks, classes),
    )
    for name, slab, start, stop in slab_bounds(source.shape, axes, slabs):
        grid = axis_grid(name, source.shape)
        groups = tuple(unit_groups(grid, start, stop, limits[name], chunks[grid.axis.principal]))
        pieces.append(Piece(len(pieces), name, slab, groups, unit))
        unit += len(groups)
    if unit > MAX_UNITS:
        raise InputError(
            f"memory budget {memory_budget / 2**20:.0f} MiB: cuts the prediction into {unit} groups of slices, more than {MAX_UNITS}; give more memory"
        )
    z, y, x = source.shape
    dz, dy, dx = (float(s) for s in spacing)
    rows = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    return Plan(
        volume=source.name,
        shape=(z, y, x),
        channels=len(source.channels),
        dtype=str(source.dtype),
        spacing=(dz, dy, dx),
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple((float(a), float(b), float(c)) for a, b, c in rows),
        model_digest=model_digest,
        class_names=list(model.class_names),
        axes=axes,
        slabs=slabs,
        chunks=chunks,
        memory_budget=int(memory_budget),
        mode=mode,
        pieces=pieces,
    )


def slab_bounds(
    shape: Sequence[int], axes: Sequence[str], slabs: int
) -> list[tuple[str, int, int, int]]:
    """``(axis, slab, first unit, end unit)`` of every piece, in plan order.

    Each axis' units are cut into ``slabs`` near-equal slabs (fewer if it has fewer units).
    """
    pieces = []
    for name in axes:
        n_units = axis_grid(name, shape).n_units
        bounds = np.linspace(0, n_units, min(slabs, n_units) + 1).round().astype(int)
        pieces += [
            (name, slab, int(a), int(b)) for slab, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
        ]
    return pieces


class WorkDir:
    """The files of one prediction (see the module documentation)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._open: dict[Path, ZarrAccumulator] = {}  # stores verified by this process

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    def load_plan(self) -> Plan | None:
        """The stored plan, or None if the work directory is new."""
        if not self.plan_file.is_file():
            return None
        return Plan.from_json(self.plan_file.read_text(encoding="utf-8"), str(self.plan_file))

    def adopt(self, plan: Plan) -> Plan:
        """Store ``plan``, or check that the stored one does the same arithmetic.

        Raises
        ------
        InputError
            If the directory belongs to another volume, model, axis set or mode.
        """
        stored = self.load_plan()
        if stored is None:
            self.path.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.plan_file, plan.to_json())
            return plan
        if stored.arithmetic() != plan.arithmetic():
            differing = sorted(
                k for k, v in plan.arithmetic().items() if stored.arithmetic().get(k) != v
            )
            raise InputError(
                f"{self.path}: work directory of another prediction (different {', '.join(differing)}); "
                "use another --work-dir or remove it"
            )
        if stored.mode != plan.mode:
            raise InputError(
                f"{self.path}: work directory of a {stored.mode}-mode run; finish it the same way "
                f"({'mdlma sun predict --piece / mdlma sun merge' if stored.mode == SPLIT else 'mdlma sun predict without --piece'})"
            )
        return stored

    def accumulator(
        self, plan: Plan, piece: Piece | None = None, *, repair: bool = True
    ) -> ZarrAccumulator:
        """The run's accumulator, or (split mode) the store of ``piece``, verified.

        With ``repair`` (the store's owner), chunks found missing or damaged are dropped
        and the recorded progress goes back to the first group that voted on one of
        them, so that those votes are added again; the store is then kept open for
        this run. Without, the store is opened afresh and its :attr:`~ZarrAccumulator.lost`
        chunks are only reported.
        """
        path = self.path / ("accumulator.zarr" if piece is None else f"pieces/{piece.key}.zarr")
        if repair and path in self._open:
            return self._open[path]
        store = ZarrAccumulator(
            path,
            plan.shape,
            len(plan.class_names),
            plan.chunks,
            cache_bytes=plan.budget.chunk_cache,
            repair=repair,
        )
        if repair:
            if store.lost:
                store.flush(_rewound(plan, piece, store))
            self._open[path] = store
        return store

    def groups_done(self, plan: Plan, piece: Piece) -> int:
        """Groups of ``piece`` whose votes are stored (as verified by :meth:`accumulator`)."""
        if plan.mode == SPLIT:
            return int(self.accumulator(plan, piece).state.get("groups_done", 0))
        return int(self.accumulator(plan).state.get("groups_done", {}).get(piece.key, 0))

    def recorded_groups(self, piece: Piece) -> int:
        """Split mode: groups of ``piece`` its store's manifest records, without verifying the chunks."""
        manifest = Manifest(self.path / "pieces" / f"{piece.key}.zarr")
        return int(manifest.state.get("groups_done", 0)) if manifest.load() else 0


def _rewound(plan: Plan, piece: Piece | None, store: ZarrAccumulator) -> dict[str, Any]:
    """The progress of ``store`` once its lost chunks are empty again: before their first votes."""
    lost = set(store.lost)

    def first_group_voting_on_lost(p: Piece, done: int) -> int:
        grid = axis_grid(p.axis, plan.shape)
        for group, (u0, u1) in enumerate(p.groups[:done]):
            if any(
                tuple(t.start // c for t, c in zip(tile, plan.chunks)) in lost
                for tile in group_tiles(grid, plan.chunks, u0, u1)
            ):
                return group
        return done

    if piece is not None:
        return {
            "groups_done": first_group_voting_on_lost(piece, int(store.state.get("groups_done", 0)))
        }
    if plan.mode == SPLIT:
        return {
            "pieces_merged": 0
        }  # merging adds each piece to a chunk at most once: merge all again
    done = store.state.get("groups_done", {})
    return {
        "groups_done": {
            p.key: first_group_voting_on_lost(p, int(done.get(p.key, 0))) for p in plan.pieces
        }
    }


def run_pieces(
    workdir: WorkDir,
    plan: Plan,
    source: VolumeSource,
    model: SliceModel,
    pieces: Sequence[Piece] | None = None,
    *,
    device: Any = None,
    max_groups: int | None = None,
    progress: bool = False,
    predictor: Any = None,
) -> tuple[RunStats, bool]:
    """Run (or resume) pieces of a plan.

    Parameters
    ----------
    workdir : WorkDir
    plan : Plan
        As returned by :meth:`WorkDir.adopt`.
    source : VolumeSource
        The volume (lazy arrays are read box by box).
    model : SliceModel
    pieces : sequence of Piece, optional
        Split mode: the pieces to run, each into its own store. Default (single
        mode): all pieces, straight into the accumulator.
    device : str, optional
    max_groups : int, optional
        Stop after this many groups (a time-sliced run; run again to continue).
    progress : bool
        Show a progress bar.
    predictor : SlicePredictor, optional
        Reuse a predictor.

    Returns
    -------
    stats : RunStats
    complete : bool
        True if every requested piece is finished.
    """
    from tqdm.auto import tqdm

    split = pieces is not None
    selected = list(pieces) if pieces is not None else plan.pieces
    done = {p.key: workdir.groups_done(plan, p) for p in selected}  # verifies the stores first
    remaining = [(p, g) for p in selected for g in range(done[p.key], len(p.groups))]
    stats = RunStats()
    if not remaining:
        return stats, True
    budget = plan.budget
    predictor = predictor or model.slice_predictor(device, memory_budget=budget)
    shared = None if split else workdir.accumulator(plan)
    bar = tqdm(
        total=sum(len(p.groups) for p in selected),
        initial=sum(len(p.groups) for p in selected) - len(remaining),
        desc="SUN predict",
        unit="group",
        disable=None if progress else True,
    )
    unrecorded: dict[str, int] = {}  # groups done since the last checkpoint, by piece key
    last_checkpoint = time.monotonic()

    def checkpoint() -> None:
        """Write the cached chunks, then commit the groups they hold (in the store's manifest)."""
        done.update(unrecorded)
        unrecorded.clear()
        if shared is not None:
            shared.flush({"groups_done": {**shared.state.get("groups_done", {}), **done}})
        else:
            for piece in selected:
                workdir.accumulator(plan, piece).flush({"groups_done": done[piece.key]})

    # Every group allocates the same buffers again; cached chunks come and go within the budget.
    with reuse_freed_memory():
        count = 0
        for piece, group in remaining:
            if max_groups is not None and count >= max_groups:
                break
            grid = axis_grid(piece.axis, plan.shape)
            if shared is None:
                accumulator, unit_number = workdir.accumulator(plan, piece), group
            else:
                accumulator, unit_number = shared, piece.first_unit + group
            u0, u1 = piece.groups[group]
            vote_unit(
                source, predictor, accumulator, grid, unit_number, u0, u1, stats, budget.reading
            )
            unrecorded[piece.key] = group + 1
            if (
                group + 1 == len(piece.groups)
                or time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS
            ):
                checkpoint()
                last_checkpoint = time.monotonic()
            count += 1
            bar.update()
        checkpoint()
    bar.close()
    complete = all(done[p.key] == len(p.groups) for p in selected)
    return stats, complete


def merge_pieces(workdir: WorkDir, plan: Plan, progress: bool = False) -> None:
    """Add the stores of all pieces (split mode) to the accumulator, in plan order.

    Raises
    ------
    InputError
        If a piece is not finished (names the missing ones) or its store lost chunks.
    """
    from tqdm.auto import tqdm

    missing = [p.name for p in plan.pieces if workdir.recorded_groups(p) < len(p.groups)]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise InputError(
            f"{workdir.path}: {len(missing)} of {len(plan.pieces)} pieces not finished: {shown}"
        )
    accumulator = workdir.accumulator(plan)
    start = int(accumulator.state.get("pieces_merged", 0))
    for piece in tqdm(
        plan.pieces[start:], desc="SUN merge", unit="piece", disable=None if progress else True
    ):
        store = workdir.accumulator(plan, piece, repair=False)
        if store.lost:
            raise InputError(
                f"{store.path}: {len(store.lost)} chunks missing or damaged; run piece {piece.name} again "
                "(mdlma sun predict with the same arguments and --piece), then merge"
            )
        for region in store.stored_regions():
            accumulator.add(piece.index, region, store.read(region))
        accumulator.flush({"pieces_merged": piece.index + 1})


@dataclass
class Outputs:
    """Where to write the fused results (None: not wanted)."""

    labels: Path
    probabilities: Path | None = None
    entropy: Path | None = None
    disagreement: Path | None = None


def write_outputs(
    workdir: WorkDir, plan: Plan, outputs: Outputs, progress: bool = False
) -> list[Path]:
    """Fuse the accumulator chunk by chunk and write the requested outputs.

    Labels are uint8; entropy and disagreement float16 where the format can hold it
    (HDF5, Zarr), else float32; probabilities float16 ``(classes, z, y, x)`` in Zarr.
    Zarr destinations are filled chunk by chunk as the accumulator is fused (memory
    stays at one chunk); other formats are written from a staging Zarr afterwards by
    :func:`unified_framework.io.write_volume`. Every output appears atomically.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import contextlib

    import dask.array as da
    import zarr
    from numcodecs import Blosc
    from tqdm.auto import tqdm

    from ...io import Volume, detect_format, write_volume
    from ...io.geometry import geometry_attributes

    if (
        outputs.probabilities is not None
        and detect_format(outputs.probabilities, for_writing=True) != "zarr"
    ):
        raise InputError(
            f"{outputs.probabilities}: fused probabilities are 4D (classes, z, y, x) and go to a .zarr store"
        )
    accumulator = workdir.accumulator(plan)
    classes = len(plan.class_names)
    staging = workdir.path / "outputs"
    shutil.rmtree(staging, ignore_errors=True)
    compressor = Blosc("zstd", 3, Blosc.BITSHUFFLE)
    attributes = {
        "spacing": list(plan.spacing),
        **geometry_attributes(plan.origin, plan.direction),
        "unit": "micrometer",
        "class_names": plan.class_names,
        "sun_axes": list(plan.axes),
    }
    requested = {
        name: getattr(outputs, name)
        for name in ("labels", "entropy", "disagreement", "probabilities")
    }
    requested = {name: Path(path) for name, path in requested.items() if path is not None}
    dtypes = {
        "labels": np.uint8,
        "entropy": np.float16,
        "disagreement": np.float16,
        "probabilities": np.float16,
    }
    with contextlib.ExitStack() as stack:
        arrays, staged = {}, []
        for name, destination in requested.items():
            direct = detect_format(destination, for_writing=True) == "zarr" and "::" not in str(
                destination
            )
            target = (
                stack.enter_context(atomic_path(destination))
                if direct
                else staging / f"{name}.zarr"
            )
            shape, chunks = (
                (plan.shape, plan.chunks)
                if name != "probabilities"
                else ((classes, *plan.shape), (classes, *plan.chunks))
            )
            arrays[name] = zarr.open_array(
                str(target),
                mode="w",
                shape=shape,
                chunks=chunks,
                dtype=dtypes[name],
                compressor=compressor,
            )
            arrays[name].attrs.update(
                {
                    **attributes,
                    "axes": ["c", "z", "y", "x"] if name == "probabilities" else ["z", "y", "x"],
                }
            )
            if not direct:
                staged.append(name)
        regions = list(chunk_regions(plan.shape, plan.chunks))
        for region in tqdm(
            regions, desc="SUN fuse", unit="chunk", disable=None if progress else True
        ):
            fused = fuse(accumulator.read(region), len(plan.axes), len(plan.class_names))
            for name, array in arrays.items():
                array[(slice(None), *region) if name == "probabilities" else region] = fused[name]
        for name in staged:
            data = da.from_zarr(arrays[name])
            if name != "labels" and detect_format(requested[name], for_writing=True) != "hdf5":
                data = data.astype(np.float32)  # TIFF and NIfTI hold no float16
            write_volume(
                requested[name],
                Volume(data, plan.spacing, origin=plan.origin, direction=plan.direction),
            )
    shutil.rmtree(staging, ignore_errors=True)
    return list(requested.values())


def predict_to_files(
    volume_paths: Sequence[str | Path],
    model_path: str | Path,
    outputs: Outputs,
    *,
    axes: str | int | Iterable[str] | None = None,
    workdir: str | Path | None = None,
    slabs: int = 1,
    piece: str | int | None = None,
    chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: Any = None,
    max_groups: int | None = None,
    keep_work: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Segment volume files with SUN through a resumable work directory.

    Parameters
    ----------
    volume_paths : sequence of path-like
        One file per input channel (read lazily).
    model_path : path-like
        Model package.
    outputs : Outputs
        Destinations (the format follows each suffix).
    axes : optional
        ``3``, ``9`` or names; default the model's axes.
    workdir : path-like, optional
        Default ``.<labels name>.sun-work`` next to the labels output.
    slabs : int
        Slabs per axis (pieces = axes x slabs).
    piece : str or int, optional
        Run only this piece (``AXIS[:SLAB]`` or index) into the work directory; the
        outputs are written later by :func:`merge_to_files`.
    chunks, memory_budget, device
        See :func:`make_plan` and :class:`SlicePredictor`.
    max_groups : int, optional
        Stop after this many groups (resume by calling again).
    keep_work : bool
        Keep the work directory after the outputs are written.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        ``complete`` (bool), ``written`` (paths), ``stats`` (RunStats), ``workdir``,
        ``plan``.
    """
    from ...io import read_volume
    from ..slice_model import load_slice_model, model_digest

    model = load_slice_model(model_path)
    volumes = [read_volume(p, lazy=True, expect_ndim=3, grey=True) for p in volume_paths]
    work = WorkDir(workdir or default_workdir(outputs.labels))
    discard_if_invalid(work.path)
    created = not work.path.exists()
    try:
        readable = [_box_readable(v) for v in volumes]
        # Lazily read inputs go through raw copies of their chunks (see .mirror).
        channels = [
            ChunkMirror(
                r, work.path / "input" / str(i), source_chunks(r, chunks), _chunk_errors(v, r)
            )
            if hasattr(r, "chunks")
            else r
            for i, (v, r) in enumerate(zip(volumes, readable))
        ]
        source = VolumeSource(channels, name=", ".join(str(p) for p in volume_paths))
        spacing = volumes[0].spacing
        _warn_voxel_size(model, spacing)
        plan = make_plan(
            source,
            model,
            model_digest(model_path),
            axes,
            slabs=slabs,
            chunks=chunks,
            memory_budget=memory_budget,
            spacing=spacing,
            mode=SPLIT if piece is not None else SINGLE,
            origin=volumes[0].origin,
            direction=volumes[0].direction,
        )
        plan = work.adopt(plan)
        started = time.perf_counter()
        if piece is not None:
            chosen = plan.find_piece(piece)
            stats, complete = run_pieces(
                work,
                plan,
                source,
                model,
                [chosen],
                device=device,
                max_groups=max_groups,
                progress=progress,
            )
            return {
                "complete": complete,
                "written": [],
                "stats": stats,
                "workdir": work.path,
                "plan": plan,
                "seconds": time.perf_counter() - started,
            }
        stats, complete = run_pieces(
            work, plan, source, model, device=device, max_groups=max_groups, progress=progress
        )
        written = write_outputs(work, plan, outputs, progress) if complete else []
    except InputError:
        # A bad input found on the way (a corrupt chunk): remove what this run began. A
        # folder that was there before is resumable work and stays (consistent: the
        # stores hold their last checkpoint); split mode shares it with other tasks.
        if created and piece is None and not keep_work:
            remove_work_folder(work.path)
        raise
    if complete and not keep_work:
        remove_work_folder(work.path)
    return {
        "complete": complete,
        "written": written,
        "stats": stats,
        "workdir": work.path,
        "plan": plan,
        "seconds": time.perf_counter() - started,
    }


def merge_to_files(
    workdir: str | Path, outputs: Outputs, *, keep_work: bool = False, progress: bool = False
) -> list[Path]:
    """Fuse the pieces of a split-mode work directory and write the outputs."""
    work = WorkDir(workdir)
    if discard_if_invalid(work.path):
        raise InputError(
            f"{workdir}: was being removed after its outputs were written (a clean-up was interrupted); nothing left to merge"
        )
    plan = work.load_plan()
    if plan is None:
        raise InputError(f"{workdir}: not a SUN work directory (no plan.json)")
    if plan.mode != SPLIT:
        raise InputError(
            f"{workdir}: a single-mode work directory; finish it with mdlma sun predict (no merge needed)"
        )
    merge_pieces(work, plan, progress)
    written = write_outputs(work, plan, outputs, progress)
    if not keep_work:
        remove_work_folder(work.path)
    return written


def _chunk_errors(volume, readable) -> Any:
    """For a Zarr input: a context manager per chunk that names the chunk's file in read errors."""
    if volume.metadata.get("format") != "zarr":
        return None  # the io readers of other formats raise InputError themselves
    from ...io._zarr import chunk_file
    from ...io.formats import library_errors

    return lambda index: library_errors(chunk_file(readable, index), "zarr")


def _box_readable(volume) -> Any:
    """The array to read boxes from: Zarr arrays directly, other formats through dask.

    Slicing a Zarr array reads just the chunks of the box; going through dask would
    build and schedule a task graph for each of the many small boxes SUN reads.
    """
    if volume.metadata.get("format") != "zarr":
        return volume.data
    import zarr

    node = zarr.open(str(volume.path), mode="r")
    dataset = (volume.metadata.get("dataset") or "").strip("/")
    return node[dataset] if dataset else node


def default_workdir(labels_path: str | Path) -> Path:
    """``.<name>.sun-work`` next to the labels output."""
    labels_path = Path(labels_path)
    return labels_path.with_name(f".{labels_path.name}.sun-work")


def _warn_voxel_size(model: SliceModel, spacing: Sequence[float]) -> None:
    ratio = np.asarray(spacing, float) / np.asarray(model.voxel_size, float)
    if np.any(np.abs(ratio - 1) > 0.1):
        logger.warning(
            "volume voxel size %s differs from the training data's %s; results may suffer",
            tuple(spacing),
            model.voxel_size,
        )
