"""Denoising and artefact removal of 2D images and 3D volumes, in memory or chunk by chunk.

Methods (:data:`METHODS`; parameters in ``docs/denoise.md`` and ``mdlma denoise --help``):
``gaussian``, ``median``, ``bilateral``, ``nl-means``, ``tv``, ``wavelet`` (scikit-image
and SciPy), ``bm3d`` (package ``bm3d``) and ``rings`` (stripe removal in sinograms,
tomopy when importable, else algotom). :func:`denoise` filters a numpy array in memory
or a dask array (a Zarr/HDF5 volume opened lazily) with ``dask.array.map_overlap`` and
the halo each method needs.

Examples
--------
>>> import numpy as np
>>> from unified_framework.denoise import denoise
>>> noisy = np.random.default_rng(0).normal(1.0, 0.2, (16, 16, 16)).astype(np.float32)
>>> float(denoise(noisy, "median", {"size": 3}).std()) < float(noisy.std())
True
"""

from .chunked import SLAB_BUDGET, denoise, denoise_file, halo, plan_slabs
from .filters import METHODS, Method, Param, estimate_noise, method, resolve_params

__all__ = [
    "METHODS",
    "SLAB_BUDGET",
    "Method",
    "Param",
    "denoise",
    "denoise_file",
    "estimate_noise",
    "halo",
    "method",
    "plan_slabs",
    "resolve_params",
]
