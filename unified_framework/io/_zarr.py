"""Zarr directory stores (zarr v2 API): one array, or an array inside a group.

Geometry: ``.zattrs`` of the array hold ``spacing``, ``origin`` (micrometres, z y x)
and ``direction`` (3x3, see :mod:`.geometry`); OME-Zarr groups give ``scale`` and
``translation`` of level 0 (NGFF has no rotation: direction is identity).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._common import (
    carried,
    default_chunks,
    jsonable,
    pick_dataset,
    source_metadata,
    to_micrometres,
    unit_factor,
)
from .formats import MIN_STORED_FRACTION, SPARSE_GRID, CheckedChunks, check_stored_chunks
from .geometry import geometry_attributes, geometry_from_attributes
from .volume import Volume, check_memory, check_ndim, is_lazy, iter_slabs

AXES = ("z", "y", "x")


def read_zarr(
    path: Path, dataset: str | None, lazy: bool, expect_ndim: Any, level: int | None = None
) -> Volume:
    """Read a Zarr array; in a group, ``dataset`` or the single 2D/3D array (OME-Zarr: ``level``, default 0)."""
    import zarr

    node = zarr.open(str(path), mode="r")
    attrs: dict[str, Any] = dict(node.attrs) if isinstance(node, zarr.hierarchy.Group) else {}
    if level is not None and _ome_level(attrs, level) is None:
        count = len(_ome_levels(attrs))
        raise InputError(
            f"{path}: no pyramid level {level}"
            + (f"; expected 0..{count - 1}" if count else "; expected an OME-Zarr multiscale group")
        )
    if isinstance(node, zarr.hierarchy.Group):
        if dataset is None:
            dataset = _ome_level(attrs, level or 0) or pick_dataset(
                str(path), _arrays(node), expect_ndim
            )
        if dataset.strip("/") not in node or not isinstance(node[dataset.strip("/")], zarr.Array):
            listing = ", ".join(_arrays(node)) or "none"
            raise InputError(f"{path}: no array {dataset!r} in Zarr group (arrays: {listing})")
        array = node[dataset.strip("/")]
    else:
        if dataset not in (None, "", "/"):
            raise InputError(f"{path}: is a single Zarr array, it has no dataset {dataset!r}")
        array = node
    array_attrs = dict(array.attrs)
    axes = "yxc" if array_attrs.get("axes") == ["y", "x", "c"] else ""
    spatial = array.ndim - bool(axes)
    check_ndim(array.shape[:spatial], expect_ndim, str(path))
    if array.nchunks > SPARSE_GRID:
        stored = _stored_chunks(array, enough=math.ceil(array.nchunks * MIN_STORED_FRACTION))
        if stored is not None:
            check_stored_chunks(path, array.shape, array.dtype, array.chunks, stored)
    ome = _ome_transforms(attrs, array.ndim, level or 0)
    found = _spacing(array_attrs, spatial) or (ome[0] if ome else None)
    spacing = found or (1.0,) * spatial
    origin, direction = geometry_from_attributes(array_attrs, f"{path}: .zattrs")
    if origin is None and ome:
        origin = ome[1]
    view = CheckedChunks(array, path, "zarr")
    if lazy:
        import dask.array as da

        data = da.from_array(view, chunks=view.chunks, name=False)
    else:
        check_memory(array.shape, array.dtype, str(path))
        data = view.read_all()
    metadata = {
        "attributes": jsonable(array_attrs) or {},
        "chunks": list(array.chunks),
        "spacing_known": found is not None,
    }
    if dataset:
        metadata["dataset"] = "/" + dataset.strip("/")
    if attrs:
        metadata["group_attributes"] = jsonable(attrs) or {}
    metadata.update(carried(array_attrs.get("source_metadata")))
    if len(_ome_levels(attrs)) > 1:
        metadata["level"] = level or 0
        metadata["levels"] = [
            {
                "shape": list(node[p].shape),
                "spacing_um": list((_ome_transforms(attrs, node[p].ndim, i) or ((),))[0]),
            }
            for i, p in enumerate(_ome_levels(attrs))
        ]
    return Volume(data, spacing, metadata, path, origin, direction, axes)


def _stored_chunks(array: Any, enough: int) -> int | None:
    """Chunks stored for ``array`` (counting may stop at ``enough``); None where not countable.

    zarr's ``nchunks_initialized`` lists one folder, which holds every chunk key only
    with the default ``.`` separator; nested (``/``) keys of a directory store are
    walked here, other stores with nested keys are not counted.
    """
    import zarr

    if getattr(array, "_dimension_separator", ".") in (None, "."):
        return int(array.nchunks_initialized)
    if not isinstance(array.chunk_store, zarr.DirectoryStore):
        return None
    count = 0
    for _, _, files in os.walk(os.path.join(array.chunk_store.path, array.path)):
        count += sum(1 for name in files if not name.startswith("."))
        if count >= enough:
            break
    return count


def _arrays(group: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    found: dict[str, tuple[tuple[int, ...], str]] = {}

    def visit(name: str, obj: Any) -> None:
        if hasattr(obj, "shape") and hasattr(obj, "dtype"):
            found[name] = (tuple(obj.shape), str(obj.dtype))

    group.visititems(visit)
    return found


def _spacing(attrs: dict, ndim: int) -> tuple[float, ...] | None:
    spacing = attrs.get("spacing")
    if not isinstance(spacing, list) or len(spacing) != ndim:
        return None
    return tuple(to_micrometres(s, attrs.get("unit", "um")) for s in spacing)


def _ome_levels(attrs: dict) -> list[str]:
    """Paths of the arrays of an OME-Zarr (NGFF) multiscale group, full resolution first."""
    try:
        return [str(d["path"]) for d in attrs["multiscales"][0]["datasets"]]
    except (KeyError, IndexError, TypeError):
        return []


def _ome_level(attrs: dict, level: int) -> str | None:
    """Path of pyramid level ``level`` of an OME-Zarr group; None if there is none."""
    levels = _ome_levels(attrs)
    return levels[level] if 0 <= level < len(levels) else None


def _ome_transforms(
    attrs: dict, ndim: int, level: int = 0
) -> tuple[tuple[float, ...], tuple[float, float, float] | None] | None:
    """Voxel size and origin (µm) of a level of an OME-Zarr group from its ``scale``/``translation``."""
    try:
        multiscale = attrs["multiscales"][0]
        transforms = multiscale["datasets"][level]["coordinateTransformations"]
        scale = next(t["scale"] for t in transforms if t.get("type") == "scale")
        translation = next(
            (t["translation"] for t in transforms if t.get("type") == "translation"), None
        )
        units = [
            axis.get("unit") if isinstance(axis, dict) else None
            for axis in multiscale.get("axes", [])
        ]
    except (KeyError, IndexError, TypeError, StopIteration):
        return None
    units = units[-ndim:] if len(units) >= ndim else [None] * ndim
    # Axes without a known length unit are taken as micrometres, NGFF's usual choice.
    units = [u if unit_factor(u) else "um" for u in units]
    spacing = tuple(to_micrometres(s, u) for s, u in zip(scale[-ndim:], units))
    origin = None
    if isinstance(translation, list) and len(translation) >= ndim:
        shift = [to_micrometres(t, u) for t, u in zip(translation[-ndim:], units)]
        origin = tuple([0.0] * (3 - ndim) + shift[-3:])
    return spacing, origin  # type: ignore[return-value]


def write_zarr(
    path: Path,
    volume: Volume,
    dataset: str | None,
    chunks: tuple[int, ...] | None,
    name: str,
    compression: str = "zstd",
) -> None:
    """Write a chunked, Blosc-compressed Zarr array with ``spacing``, ``origin`` and ``direction`` in ``.zattrs``.

    ``compression`` is one of :data:`ZARR_COMPRESSIONS`: ``zstd`` (level 3) packs
    best, ``lz4`` writes several times faster (noisy float data shrinks little with
    either), ``none`` stores raw chunks. A dask array is computed and written in one
    pass on dask's threads (:func:`store_lazy`), so its chunks are filtered, encoded
    and written in parallel.
    """
    import zarr
    from numcodecs import Blosc

    data = volume.data
    chunks = tuple(chunks or default_chunks(data.shape))
    codecs = {
        "zstd": Blosc("zstd", 3, Blosc.BITSHUFFLE),
        "lz4": Blosc("lz4", 5, Blosc.BITSHUFFLE),
        "none": None,
    }
    options = dict(
        shape=data.shape, chunks=chunks, dtype=data.dtype, compressor=codecs[compression]
    )
    # Created here so that a folder the user may not write to fails as an OSError
    # (zarr's store would turn it into a KeyError naming ".zarray").
    path.mkdir()
    store = zarr.DirectoryStore(str(path))
    if dataset and dataset.strip("/"):
        array = zarr.group(store=store).create_dataset(dataset.strip("/"), **options)
    else:
        array = zarr.open_array(store=store, mode="w", **options)
    array.attrs.update(
        {
            "spacing": list(volume.spacing),
            **geometry_attributes(volume.origin, volume.direction),
            "unit": "micrometer",
            "axes": list(volume.axes or AXES[-data.ndim :]),
            "source_metadata": source_metadata(volume.metadata),
        }
    )
    if is_lazy(data):
        store_lazy(data, array, desc=f"writing {name}")
        return
    for start, stop, block in iter_slabs(data, step=chunks[0], desc=f"writing {name}"):
        array[start:stop] = block
        del block  # else the written slab stays alive while the next one is computed


def store_lazy(data: Any, array: Any, desc: str | None = None) -> None:
    """Compute dask array ``data`` into ``array`` (a Zarr array) in one graph on dask's threads.

    Each dask chunk is computed, encoded and written by one thread while the others
    compute theirs: reading, filtering and writing overlap, and a chunk that several
    output chunks need (a halo) is computed once, not once per slab. Chunks that
    cover whole output chunks are written without a lock; otherwise writes take a
    lock (two threads would update the same stored chunk). ``desc`` shows a
    progress bar of chunks on a terminal.
    """
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import dask.array as da
    from dask.callbacks import Callback
    from tqdm.auto import tqdm

    aligned = all(
        all(int(edge) % int(c) == 0 for edge in np.cumsum(sizes)[:-1])
        for sizes, c in zip(data.chunks, array.chunks)
    )
    stored = da.store(data, array, lock=False if aligned else threading.Lock(), compute=False)
    blocks = int(np.prod(data.numblocks))
    with tqdm(
        total=blocks, desc=desc, unit="chunk", disable=None if desc else True, leave=False
    ) as bar:

        class Progress(Callback):
            def _posttask(self, key: Any, *args: Any) -> None:
                name = key[0] if isinstance(key, tuple) else key
                if str(name).startswith("store-map"):
                    bar.update(1)

        # Threads here, whatever dask scheduler is current: the Zarr array is this
        # process's object (a distributed client would pickle it to other machines).
        # Our own pool, because dask raises a failed chunk's error while other chunks
        # are still being written: the caller may only clean up (remove the temporary
        # output) once no thread writes into it any more.
        pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        try:
            with Progress():
                dask.compute(stored, scheduler="threads", pool=pool)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def chunk_file(array: Any, index: Sequence[int]) -> Path:
    """The file that holds chunk ``index`` of a Zarr v2 array in a directory store (for messages).

    Examples
    --------
    >>> import zarr
    >>> array = zarr.open_array("scan.zarr", mode="w", shape=(4, 4), chunks=(2, 2))  # doctest: +SKIP
    >>> chunk_file(array, (1, 0))  # doctest: +SKIP
    PosixPath('scan.zarr/1.0')
    """
    key = array._chunk_key(tuple(int(i) for i in index))  # zarr v2 names chunk keys only privately
    root = getattr(array.store, "path", None)
    return Path(root, key) if root else Path(key)
