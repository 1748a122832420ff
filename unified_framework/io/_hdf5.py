"""HDF5 and NeXus files: read any 2D/3D dataset, write the NeXus NXdata layout.

Geometry: the dataset's ``spacing``, ``origin`` (``origin_units``) and ``direction``
attributes (see :mod:`.geometry`); without them the NXdata axis coordinates give the
voxel size (their step) and the origin (their first value).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._common import (
    carried,
    default_chunks,
    describe_datasets,
    jsonable,
    metadata_json,
    pick_dataset,
    to_micrometres,
    unit_factor,
)
from .formats import CheckedChunks, check_stored_chunks
from .geometry import geometry_attributes, geometry_from_attributes
from .volume import Volume, check_memory, check_ndim, iter_slabs, slices_per_slab

DEFAULT_DATASET = "/entry/data/data"
AXES = ("z", "y", "x")


def read_hdf5(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Read one dataset; without ``dataset`` follow NeXus ``default``/``signal`` or take the only 2D/3D one."""
    import h5py

    f = h5py.File(path, "r")
    try:
        if dataset is None:
            dataset = _nexus_signal(f) or pick_dataset(str(path), _datasets(f), expect_ndim)
        node = f.get(dataset)
        if not isinstance(node, h5py.Dataset):
            raise InputError(
                f"{path}: no dataset {dataset!r} (datasets: {describe_datasets(_datasets(f)) or 'none'})"
            )
        check_ndim(node.shape, expect_ndim, f"{path}::{node.name}")
        coords = _axis_coordinates(node)
        spacing = _spacing(node) or (
            tuple(step for _, step in coords) if coords else (1.0,) * node.ndim
        )
        origin, direction = geometry_from_attributes(node.attrs, f"{path}::{node.name}")
        if origin is None and coords:
            origin = tuple([0.0] * (3 - node.ndim) + [first for first, _ in coords][-3:])
        metadata = {
            "spacing_known": _spacing(node) is not None or bool(coords),
            "dataset": node.name,
            "attributes": _attrs(node),
            "group_attributes": _attrs(node.parent),
            "file_attributes": _attrs(f),
            "chunks": list(node.chunks) if node.chunks else None,
            "compression": node.compression,
        }
        if node.chunks:
            check_stored_chunks(
                f"{path}::{node.name}",
                node.shape,
                node.dtype,
                node.chunks,
                node.id.get_num_chunks(),
            )
        # Unchunked (contiguous) data is read in slabs of whole slices.
        view = CheckedChunks(
            node,
            path,
            "hdf5",
            node.chunks or (slices_per_slab(node.shape, node.dtype),) + node.shape[1:],
        )
        if lazy:
            import dask.array as da

            # The dask graph keeps the file open through its reference to the dataset.
            data = da.from_array(view, chunks=view.chunks, name=False)
        else:
            check_memory(node.shape, node.dtype, f"{path}::{node.name}")
            data = view.read_all()
    except BaseException:
        f.close()
        raise
    if not lazy:
        f.close()
    metadata.update(carried(metadata["attributes"].get("source_metadata")))
    return Volume(data, spacing, metadata, path, origin, direction)


def _datasets(f: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    import h5py

    found: dict[str, tuple[tuple[int, ...], str]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found["/" + name] = (tuple(obj.shape or ()), str(obj.dtype))

    f.visititems(visit)
    return found


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.item())
    return value if isinstance(value, str) else None


def _nexus_signal(f: Any) -> str | None:
    """Follow NeXus ``default`` attributes from the root down to the NXdata ``signal``."""
    import h5py

    node = f
    for _ in range(8):
        if not isinstance(node, h5py.Group):
            break
        signal, default = _text(node.attrs.get("signal")), _text(node.attrs.get("default"))
        if signal and isinstance(node.get(signal), h5py.Dataset):
            return node[signal].name
        if not default or default not in node:
            return None
        node = node[default]
    return node.name if isinstance(node, h5py.Dataset) else None


def _spacing(node: Any) -> tuple[float, ...] | None:
    """Voxel size from our ``spacing`` attribute."""
    spacing = node.attrs.get("spacing")
    if spacing is not None and np.size(spacing) == node.ndim:
        unit = _text(node.attrs.get("spacing_units")) or "um"
        if unit_factor(unit):
            return tuple(to_micrometres(s, unit) for s in np.ravel(spacing))
    return None


def _axis_coordinates(node: Any) -> list[tuple[float, float]] | None:
    """``(first value, step)`` in µm of each NXdata axis coordinate of ``node``; None if incomplete."""
    axes = node.parent.attrs.get("axes")
    if axes is None:
        return None
    names = [_text(a) for a in np.atleast_1d(axes)]
    if len(names) != node.ndim:
        return None
    values = []
    for name in names:
        coord = node.parent.get(name) if name and name != "." else None
        unit = _text(coord.attrs.get("units")) if coord is not None else None
        if coord is None or coord.ndim != 1 or coord.shape[0] < 2 or not unit_factor(unit):
            return None
        first, second = coord[:2]
        # 12 significant digits drop the float noise of the difference.
        values.append(
            (
                to_micrometres(float(f"{first:.12g}"), unit),
                to_micrometres(float(f"{second - first:.12g}"), unit),
            )
        )
    return values


def _attrs(node: Any) -> dict[str, Any]:
    attrs = {key: value for key in node.attrs if (value := jsonable(node.attrs[key])) is not None}
    if isinstance(attrs.get("source_metadata"), str):  # stored as JSON text by write_hdf5
        try:
            attrs["source_metadata"] = json.loads(attrs["source_metadata"])
        except ValueError:
            pass
    return attrs


def write_hdf5(
    path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str
) -> None:
    """Write a gzip-compressed, chunked dataset; a three-level path gets the NeXus layout.

    ``/entry/data/data`` (the default) becomes ``NXroot -> NXentry -> NXdata`` with
    ``signal``, ``axes`` and coordinate datasets ``z``, ``y``, ``x`` in micrometres
    (world positions of the voxel centres when the direction is the identity, else
    distances from voxel 0: the dataset's ``origin``/``direction`` attributes hold
    the geometry).
    """
    import h5py

    data = volume.data
    name = "/" + (dataset or DEFAULT_DATASET).strip("/")
    chunks = tuple(chunks or default_chunks(data.shape))
    with h5py.File(path, "w") as f:
        parts = name.strip("/").split("/")
        if len(parts) == 3:
            _nexus_groups(f, parts, volume, name)
        node = f.create_dataset(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks,
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        node.attrs["spacing"] = np.asarray(volume.spacing, dtype=np.float64)
        node.attrs["spacing_units"] = "um"
        for key, value in geometry_attributes(volume.origin, volume.direction).items():
            node.attrs[key] = np.asarray(value, dtype=np.float64)
        node.attrs["origin_units"] = "um"
        node.attrs["axes_order"] = ",".join(AXES[-data.ndim :])
        node.attrs["source_metadata"] = metadata_json(volume.metadata)
        for start, stop, block in iter_slabs(data, step=chunks[0], desc=f"writing {name}"):
            node[start:stop] = block
            del block  # else the written slab stays alive while the next one is computed


def _nexus_groups(f: Any, parts: list[str], volume: Volume, name: str) -> None:
    entry_name, data_name, signal = parts
    axes = list(AXES[-volume.ndim :])
    if signal in axes:
        raise InputError(
            f"{name}: NeXus signal dataset may not be named {signal!r} (an axis name); expected another name"
        )
    f.attrs["NX_class"] = "NXroot"
    f.attrs["default"] = entry_name
    entry = f.create_group(entry_name)
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = data_name
    group = entry.create_group(data_name)
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = axes
    aligned = np.array_equal(volume.direction, np.eye(3))
    starts = volume.origin[-volume.ndim :] if aligned else (0.0,) * volume.ndim
    for index, (axis, n, step, start) in enumerate(zip(axes, volume.shape, volume.spacing, starts)):
        group.attrs[f"{axis}_indices"] = index
        coord = group.create_dataset(axis, data=start + np.arange(n, dtype=np.float64) * step)
        coord.attrs["units"] = "um"
        coord.attrs["long_name"] = (
            f"{axis} position of voxel centres (um)"
            if aligned
            else f"{axis} distance from voxel 0 along the axis (um)"
        )
