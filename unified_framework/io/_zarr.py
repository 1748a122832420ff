"""Zarr directory stores (zarr v2 API): one array, or an array inside a group."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ._common import default_chunks, jsonable, pick_dataset, source_metadata, to_micrometres, unit_factor
from .volume import Volume, check_ndim, iter_slabs

AXES = ("z", "y", "x")


def read_zarr(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Read a Zarr array; in a group, ``dataset`` or the single 2D/3D array (OME-Zarr: level 0)."""
    import zarr

    node = zarr.open(str(path), mode="r")
    attrs: dict[str, Any] = {}
    if isinstance(node, zarr.hierarchy.Group):
        attrs = dict(node.attrs)
        if dataset is None:
            dataset = _ome_level0(attrs) or pick_dataset(str(path), _arrays(node), expect_ndim)
        if dataset.strip("/") not in node or not isinstance(node[dataset.strip("/")], zarr.Array):
            listing = ", ".join(_arrays(node)) or "none"
            raise InputError(f"{path}: no array {dataset!r} in Zarr group (arrays: {listing})")
        array = node[dataset.strip("/")]
    else:
        if dataset not in (None, "", "/"):
            raise InputError(f"{path}: is a single Zarr array, it has no dataset {dataset!r}")
        array = node
    check_ndim(array.shape, expect_ndim, str(path))
    array_attrs = dict(array.attrs)
    spacing = _spacing(array_attrs, array.ndim) or _ome_spacing(attrs, array.ndim) or (1.0,) * array.ndim
    if lazy:
        import dask.array as da

        data = da.from_zarr(array)
    else:
        data = array[...]
    metadata = {"attributes": jsonable(array_attrs) or {}, "chunks": list(array.chunks)}
    if dataset:
        metadata["dataset"] = "/" + dataset.strip("/")
    if attrs:
        metadata["group_attributes"] = jsonable(attrs) or {}
    return Volume(data, spacing, metadata, path)


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


def _ome_level0(attrs: dict) -> str | None:
    """Path of the full-resolution array of an OME-Zarr (NGFF) multiscale group."""
    try:
        return attrs["multiscales"][0]["datasets"][0]["path"]
    except (KeyError, IndexError, TypeError):
        return None


def _ome_spacing(attrs: dict, ndim: int) -> tuple[float, ...] | None:
    """Voxel size of level 0 of an OME-Zarr group from its ``scale`` transformation."""
    try:
        multiscale = attrs["multiscales"][0]
        transforms = multiscale["datasets"][0]["coordinateTransformations"]
        scale = next(t["scale"] for t in transforms if t.get("type") == "scale")
        units = [axis.get("unit") if isinstance(axis, dict) else None for axis in multiscale.get("axes", [])]
    except (KeyError, IndexError, TypeError, StopIteration):
        return None
    scale, units = scale[-ndim:], (units[-ndim:] if len(units) >= ndim else [None] * ndim)
    # Axes without a known length unit are taken as micrometres, NGFF's usual choice.
    return tuple(to_micrometres(s, u if unit_factor(u) else "um") for s, u in zip(scale, units))


def write_zarr(path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str) -> None:
    """Write a chunked, Blosc/zstd-compressed Zarr array with ``spacing`` in ``.zattrs``."""
    import zarr
    from numcodecs import Blosc

    data = volume.data
    chunks = tuple(chunks or default_chunks(data.shape))
    options = dict(shape=data.shape, chunks=chunks, dtype=data.dtype, compressor=Blosc("zstd", 3, Blosc.BITSHUFFLE))
    store = zarr.DirectoryStore(str(path))
    if dataset and dataset.strip("/"):
        array = zarr.group(store=store).create_dataset(dataset.strip("/"), **options)
    else:
        array = zarr.open_array(store=store, mode="w", **options)
    array.attrs.update(
        {
            "spacing": list(volume.spacing),
            "unit": "micrometer",
            "axes": list(AXES[-data.ndim :]),
            "source_metadata": source_metadata(volume.metadata),
        }
    )
    for start, stop, block in iter_slabs(data, step=chunks[0], desc=f"writing {name}"):
        array[start:stop] = block



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
