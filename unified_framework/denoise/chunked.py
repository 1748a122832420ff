"""Apply a denoising method to an in-memory or a chunked (dask, Zarr) array, and to files."""

from __future__ import annotations

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


def denoise_file(
    input: str | Path,
    output: str | Path,
    name: str,
    params: dict[str, Any] | None = None,
    chunks: int | None = None,
) -> dict[str, Any]:
    """Denoise a volume file into another (any formats :mod:`unified_framework.io` handles).

    The input is read lazily and the output written slab by slab, so volumes larger
    than memory work (Zarr and HDF5 inputs keep their chunks; ``chunks`` sets an edge).

    Returns
    -------
    dict
        ``method``, ``params`` (resolved), ``halo``, ``shape``, ``input``, ``output``.
    """
    from ..io import read_volume, write_volume

    volume = read_volume(input, lazy=True, grey=True)
    data = volume.data
    if chunks:
        data = data.rechunk(int(chunks))
    values = resolve_params(name, params)
    result = denoise(data, name, values)
    write_volume(output, volume.with_data(result), dtype=np.float32)
    return {
        "method": name,
        "params": values,
        "halo": list(method(name).halo(values, data.ndim)),
        "shape": list(volume.shape),
        "input": str(input),
        "output": str(output),
    }
