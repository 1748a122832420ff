"""Apply a denoising method to an in-memory or a chunked (dask, Zarr) array, and to files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .filters import estimate_noise, method, resolve_params


def halo(name: str, params: dict[str, Any] | None, ndim: int) -> tuple[int, ...]:
    """Voxels of context per axis that chunked filtering with ``name`` needs.

    Examples
    --------
    >>> halo("gaussian", {"sigma": 2.0}, 3)
    (8, 8, 8)
    >>> halo("bilateral", {"sigma_spatial": 1.0}, 3)
    (0, 3, 3)
    """
    return method(name).halo(resolve_params(name, params), ndim)


def denoise(image: Any, name: str, params: dict[str, Any] | None = None) -> Any:
    """Filter a 2D or 3D image with method ``name``; a dask array stays lazy.

    A dask array is filtered chunk by chunk with ``dask.array.map_overlap``, each chunk
    extended by the method's :func:`halo` (the volume's own edges are not padded, so
    they are treated as in memory); for the exact methods the result equals the
    in-memory one. Methods that need whole slices (``rings``) are rechunked to whole
    slices first. A noise level the method would estimate is estimated once on the
    whole image, so every chunk uses the same one.

    Parameters
    ----------
    image : numpy.ndarray or dask.array.Array
        2D or 3D grey values.
    name : str
        One of :data:`unified_framework.denoise.METHODS`.
    params : dict, optional
        Method parameters (values may be strings); defaults otherwise.

    Returns
    -------
    numpy.ndarray or dask.array.Array of float32

    Raises
    ------
    InputError
        For an unknown method or parameter, a value out of range or an image that is
        not 2D/3D numbers.

    Examples
    --------
    >>> import dask.array as da
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(size=(32, 32)).astype(np.float32)
    >>> chunked = denoise(da.from_array(image, chunks=8), "gaussian", {"sigma": 1.5}).compute()
    >>> bool(np.allclose(chunked, denoise(image, "gaussian", {"sigma": 1.5}), atol=1e-6))
    True
    """
    spec = method(name)
    values = resolve_params(name, params)
    if image.ndim not in (2, 3):
        raise InputError(
            f"image: expected a 2D or 3D grey-value image, got shape {tuple(image.shape)}"
        )
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise InputError(f"image: expected numbers, got dtype {image.dtype}")
    for key in spec.needs_noise:
        if not values[key]:
            values[key] = estimate_noise(image)
    lazy = type(image).__module__.split(".")[0] == "dask"
    if not lazy:
        return spec.function(np.asarray(image), **values)
    import dask.array as da

    data = image.astype(np.float32)
    if spec.whole_slices:
        chunks = (data.chunks[0],) + tuple((n,) for n in data.shape[1:])
        if data.ndim == 2:
            chunks = tuple((n,) for n in data.shape)
        data = data.rechunk(chunks)
    depth = list(spec.halo(values, data.ndim))
    # A halo as long as an axis means the whole axis: one chunk along it, no overlap.
    # Smaller chunks than the halo are merged by map_overlap itself (allow_rechunk).
    whole = [axis for axis, d in enumerate(depth) if d >= data.shape[axis] - 1]
    if whole:
        data = data.rechunk({axis: -1 for axis in whole})
        for axis in whole:
            depth[axis] = 0
    return da.map_overlap(
        lambda block: spec.function(block, **values),
        data,
        depth=dict(enumerate(depth)),
        boundary="none",
        dtype=np.float32,
        meta=np.empty((0,) * data.ndim, np.float32),
    )


#: Bytes of input (with its halo) one slab of :func:`denoise_file` may hold; a filter
#: works on a few times that (float copies, its own buffers), once per dask thread.
SLAB_BUDGET = 256 * 2**20


def plan_slabs(
    shape: tuple[int, ...],
    halo: Sequence[int],
    step: int = 64,
    threads: int | None = None,
    itemsize: int = 4,
    budget: int = SLAB_BUDGET,
) -> tuple[int, ...]:
    """Chunk shape for filtering a volume out of core: whole-plane slabs along axis 0.

    Whole planes need no halo across axes 1 and 2, and the halo along axis 0 is read
    once per slab border instead of once per small chunk side: the work of a chunked
    run stays close to the in-memory one. The slab thickness is a multiple of
    ``step`` (the output's chunk edge, so that every slab writes whole stored chunks
    without a lock) and its input with the halo fits ``budget`` bytes; among those,
    the one that finishes soonest on ``threads`` threads wins (each slab costs its
    thickness plus its halo; fewer, thicker slabs when halos are wide, several when
    there are threads to keep busy). Planes too large for the budget give cubic
    chunks of the largest fitting edge (a multiple of ``step``) instead.

    Examples
    --------
    >>> plan_slabs((256, 256, 256), (4, 4, 4), threads=4)
    (64, 256, 256)
    >>> plan_slabs((256, 256, 256), (32, 32, 32), threads=2)
    (128, 256, 256)
    >>> plan_slabs((256, 256, 256), (32, 32, 32), threads=1)
    (256, 256, 256)
    >>> plan_slabs((64, 8192, 8192), (8, 8, 8), budget=2**28)
    (64, 384, 384)
    """
    import os

    threads = max(1, int(threads or os.cpu_count() or 1))
    n, h, step = int(shape[0]), int(halo[0]), max(1, int(step))
    plane = itemsize * math.prod(int(x) for x in shape[1:])
    thickest = budget // max(1, plane) - 2 * h
    if thickest < min(n, step):
        # Whole planes do not fit: cubes with their halo on every side.
        widest = max(int(x) for x in halo)
        edge = int((budget / itemsize) ** (1 / len(shape))) - 2 * widest
        edge = max(step, edge // step * step)
        return tuple(min(int(x), edge) for x in shape)
    best: tuple[float, int] | None = None
    for thickness in range(step, n + step, step):
        thickness = min(thickness, n)
        if thickness > max(thickest, step):
            break
        costs = [
            min(stop + h, n) - max(start - h, 0)
            for start, stop in ((a, min(a + thickness, n)) for a in range(0, n, thickness))
        ]
        finish = max(sum(costs[i::threads]) for i in range(threads))
        # Ties go to the thinner slab: more slabs overlap reading and writing with filtering.
        if best is None or finish < best[0]:
            best = (finish, thickness)
        if thickness == n:
            break
    assert best is not None
    return (best[1], *(int(x) for x in shape[1:]))


def denoise_file(
    input: str | Path,
    output: str | Path,
    name: str,
    params: dict[str, Any] | None = None,
    chunks: int | None = None,
    compression: str = "lz4",
    budget: int = SLAB_BUDGET,
) -> dict[str, Any]:
    """Denoise a volume file into another (any formats :mod:`unified_framework.io` handles).

    The input is read lazily and filtered in whole-plane slabs planned by
    :func:`plan_slabs` (each slab with the method's halo along axis 0, its input
    within ``budget`` bytes), all slabs in one dask graph on dask's threads, so
    that reading, filtering and writing overlap and volumes larger than memory work.
    ``chunks`` sets a cubic chunk edge instead (2D images are filtered whole up to
    the budget). A Zarr output is written with Blosc ``compression`` (``lz4`` by
    default: noisy grey values shrink by a fifth with any codec, and lz4 writes
    several times faster than zstd).

    Returns
    -------
    dict
        ``method``, ``params`` (resolved), ``halo``, ``shape``, ``chunks``, ``input``,
        ``output``.

    Examples
    --------
    >>> denoise_file("scan.zarr", "smooth.zarr", "gaussian", {"sigma": 1.0})  # doctest: +SKIP
    {'method': 'gaussian', 'params': {'sigma': 1.0, 'truncate': 4.0}, 'halo': [4, 4, 4], ...}
    """
    from ..io import read_volume, write_volume
    from ..io._common import default_chunks

    volume = read_volume(input, lazy=True, grey=True)
    data = volume.data
    values = resolve_params(name, params)
    spec = method(name)
    for key in spec.needs_noise:
        if not values[key]:
            values[key] = estimate_noise(data)
    depth = spec.halo(values, data.ndim)
    out_chunks = default_chunks(data.shape)
    zarr_out = Path(output).suffix.lower() == ".zarr"
    if chunks:
        data = data.rechunk(int(chunks))
    else:
        plan = plan_slabs(data.shape, depth, step=out_chunks[0], budget=budget)
        if not zarr_out and plan[1:] == tuple(data.shape[1:]):
            # Other formats are written slab by slab (io.iter_slabs, borders on multiples
            # of the output chunk): slabs one output chunk thick are never computed twice.
            plan = (min(plan[0], out_chunks[0]), *plan[1:])
        data = data.rechunk(plan)
    result = denoise(data, name, values)
    write_volume(
        output,
        volume.with_data(result),
        dtype=np.float32,
        chunks=out_chunks,
        compression=compression if zarr_out else None,
    )
    return {
        "method": name,
        "params": values,
        "halo": list(depth),
        "shape": list(volume.shape),
        "chunks": [int(c[0]) for c in data.chunks],
        "input": str(input),
        "output": str(output),
    }
