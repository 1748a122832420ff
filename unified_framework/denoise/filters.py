"""The denoising and artefact-removal methods, their parameters and the halo each needs.

Every method is a function ``f(image, **params) -> float32 array`` over a 2D or 3D
array, described by a :class:`Method`: its documented parameters with defaults and the
*halo* (voxels of context per axis) a chunk needs so that filtering chunk by chunk
(:func:`unified_framework.denoise.denoise`) matches filtering the whole array.

Exact methods (the chunked result equals the in-memory one up to float rounding):
``gaussian``, ``median``, ``bilateral``, ``nl-means``, ``rings``. Global methods whose
every output voxel depends, however weakly, on the whole image get a halo that makes
the difference negligible but not zero: ``tv`` (an iterative global minimisation),
``wavelet`` and ``bm3d`` (their block/wavelet grids start at the chunk's corner). Their
noise level, when estimated, is estimated once on the whole volume
(:func:`estimate_noise`) so that every chunk uses the same one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

_BM3D_LOCK = threading.Lock()


@dataclass(frozen=True)
class Param:
    """One parameter of a method: default, type and meaning (shown by ``mdlma denoise --help``)."""

    default: Any
    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Method:
    """A denoising method.

    Attributes
    ----------
    name : str
    function : callable
        ``function(image, **params)`` on a float32 array, 2D or 3D.
    params : dict of str to Param
    halo : callable
        ``halo(params, ndim)`` -> voxels of context per axis for chunked filtering.
    exact : bool
        Whether the chunked result equals the in-memory one (up to rounding).
    slicewise : bool
        A 2D method applied slice by slice (axis 0) on volumes.
    whole_slices : bool
        Needs whole slices (axes 1, 2) in every chunk (sinogram filters).
    summary : str
    """

    name: str
    function: Callable[..., np.ndarray]
    params: dict[str, Param]
    halo: Callable[[dict[str, Any], int], tuple[int, ...]]
    exact: bool
    summary: str
    slicewise: bool = False
    whole_slices: bool = False
    needs_noise: tuple[str, ...] = field(default=())


def _uniform(radius: int, ndim: int, slicewise: bool = False) -> tuple[int, ...]:
    radius = int(radius)
    return tuple(0 if (slicewise and ndim == 3 and axis == 0) else radius for axis in range(ndim))


def _per_slice(function: Callable[..., np.ndarray], image: np.ndarray, **kw: Any) -> np.ndarray:
    if image.ndim == 2:
        return np.asarray(function(image, **kw), dtype=np.float32)
    out = np.empty(image.shape, np.float32)
    for z in range(image.shape[0]):
        out[z] = function(image[z], **kw)
    return out


# --- the methods ---------------------------------------------------------------------


def gaussian(image: np.ndarray, sigma: float = 1.0, truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter (``scipy.ndimage.gaussian_filter``, mirrored edges).

    Examples
    --------
    >>> float(gaussian(np.ones((8, 8)), sigma=1.0).mean())
    1.0
    """
    from scipy import ndimage

    return ndimage.gaussian_filter(image.astype(np.float32, copy=False), sigma, truncate=truncate)


def median(image: np.ndarray, size: int = 3) -> np.ndarray:
    """Median over a cube (square) of ``size`` voxels a side (``scipy.ndimage.median_filter``).

    Examples
    --------
    >>> median(np.array([[0, 0, 0], [0, 9, 0], [0, 0, 0]], float)).max()
    np.float32(0.0)
    """
    from scipy import ndimage

    return ndimage.median_filter(image.astype(np.float32, copy=False), size=int(size))


def bilateral(
    image: np.ndarray, sigma_color: float = 0.1, sigma_spatial: float = 1.5, win_size: int = 0
) -> np.ndarray:
    """Edge-preserving bilateral filter (``skimage.restoration.denoise_bilateral``), per slice on volumes.

    ``sigma_color`` is in grey values of the image (not rescaled); ``win_size`` 0 picks
    ``2 * ceil(3 * sigma_spatial) + 1``.
    """
    from skimage.restoration import denoise_bilateral

    size = _bilateral_window(sigma_spatial, win_size)
    # skimage shifts negative images internally but builds its grey-value lookup table
    # for the unshifted range; shifting to >= 0 here (the filter depends only on
    # differences) keeps the weights independent of each chunk's own minimum.
    data = image.astype(np.float64, copy=False)
    low = float(data.min()) if data.size else 0.0
    return low + _per_slice(
        denoise_bilateral,
        data - low,
        sigma_color=float(sigma_color),
        sigma_spatial=float(sigma_spatial),
        win_size=size,
        mode="reflect",
    )


def _bilateral_window(sigma_spatial: float, win_size: int) -> int:
    return int(win_size) if win_size else 2 * math.ceil(3 * float(sigma_spatial)) + 1


def nl_means(
    image: np.ndarray,
    h: float = 0.05,
    patch_size: int = 5,
    patch_distance: int = 6,
    fast_mode: bool = True,
) -> np.ndarray:
    """Non-local means (``skimage.restoration.denoise_nl_means``); ``h`` in grey values."""
    from skimage.restoration import denoise_nl_means

    return np.asarray(
        denoise_nl_means(
            image.astype(np.float32, copy=False),
            h=float(h),
            patch_size=int(patch_size),
            patch_distance=int(patch_distance),
            fast_mode=bool(fast_mode),
        ),
        dtype=np.float32,
    )


def total_variation(
    image: np.ndarray, weight: float = 0.1, max_num_iter: int = 100, eps: float = 2e-4
) -> np.ndarray:
    """Total-variation denoising (Chambolle, ``skimage.restoration.denoise_tv_chambolle``)."""
    from skimage.restoration import denoise_tv_chambolle

    return np.asarray(
        denoise_tv_chambolle(
            image.astype(np.float32, copy=False),
            weight=float(weight),
            max_num_iter=int(max_num_iter),
            eps=float(eps),
        ),
        dtype=np.float32,
    )


def wavelet(
    image: np.ndarray,
    sigma: float = 0.0,
    wavelet: str = "db2",
    mode: str = "soft",
    method: str = "BayesShrink",
    levels: int = 3,
) -> np.ndarray:
    """Wavelet shrinkage (``skimage.restoration.denoise_wavelet``).

    ``sigma`` 0 estimates the noise once from the whole image (:func:`estimate_noise`).
    """
    from skimage.restoration import denoise_wavelet

    if not sigma:
        sigma = estimate_noise(image)
    return np.asarray(
        denoise_wavelet(
            image.astype(np.float32, copy=False),
            sigma=float(sigma),
            wavelet=str(wavelet),
            mode=str(mode),
            method=str(method),
            wavelet_levels=int(levels),
            rescale_sigma=True,
        ),
        dtype=np.float32,
    )


def bm3d_filter(image: np.ndarray, sigma: float = 0.0, profile: str = "np") -> np.ndarray:
    """BM3D (package ``bm3d``), per slice on volumes; ``sigma`` 0: estimated once (:func:`estimate_noise`)."""
    import bm3d

    if not sigma:
        sigma = estimate_noise(image)
    # bm3d's native library starts one thread pool per process and aborts when two
    # threads (dask's chunk workers) call it at once.
    with _BM3D_LOCK:
        return _per_slice(
            lambda s: bm3d.bm3d(s, sigma_psd=float(sigma), profile=str(profile)),
            image.astype(np.float32, copy=False),
        )


def rings(
    image: np.ndarray, size: int = 21, dim: int = 1, backend: str = "auto", axis: int = 0
) -> np.ndarray:
    """Stripe removal in sinograms (ring artefacts in reconstructions), slice by slice.

    Each 2D slice (axis 0 of a volume) is a sinogram, angles along its rows; vertical
    stripes in it are the rings of its reconstruction. ``backend`` ``tomopy``
    (``tomopy.remove_stripe_based_sorting``, when importable), ``algotom``
    (``algotom.prep.removal.remove_stripe_based_sorting``) or ``auto`` (tomopy if
    importable). ``size`` is the median window across the detector; ``dim`` 1 or 2.
    ``axis`` is unused (kept so that a pipeline can name it).
    """
    del axis
    use = backend
    if use == "auto":
        import importlib.util

        use = "tomopy" if importlib.util.find_spec("tomopy") is not None else "algotom"
    data = image.astype(np.float32, copy=False)
    if use == "tomopy":
        try:
            import tomopy
        except ImportError:
            raise InputError(
                "backend: tomopy is not installed here (it comes with the conda environment); use backend algotom"
            ) from None
        stack = data[:, None] if data.ndim == 2 else np.moveaxis(data, 0, 1)
        out = tomopy.remove_stripe_based_sorting(stack, size=int(size), dim=int(dim))
        return np.asarray(out[:, 0] if data.ndim == 2 else np.moveaxis(out, 1, 0), np.float32)
    from algotom.prep.removal import remove_stripe_based_sorting

    return _per_slice(lambda s: remove_stripe_based_sorting(s, size=int(size), dim=int(dim)), data)


def estimate_noise(image: Any) -> float:
    """Standard deviation of Gaussian noise, estimated from the finest wavelet band (MAD).

    On a volume, the estimate uses up to five slices spread over it (so a lazy volume
    is read only there): one value for every chunk of a chunked run.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(estimate_noise(rng.normal(0, 0.1, (128, 128))), 2)
    0.1
    """
    from skimage.restoration import estimate_sigma

    if image.ndim == 3:
        picks = np.unique(np.linspace(0, image.shape[0] - 1, min(5, image.shape[0])).astype(int))
        # One read of all picked slices: a lazy volume decodes each stored chunk once
        # (two slices in one chunk row would otherwise decode that row twice).
        stack = image[picks.tolist()]
        stack = np.asarray(stack.compute() if hasattr(stack, "compute") else stack)
        values = [float(estimate_sigma(np.asarray(plane, np.float64))) for plane in stack]
        return float(np.median(values))
    return float(estimate_sigma(np.asarray(image, np.float64)))


def _wavelet_halo(p: dict[str, Any], ndim: int) -> tuple[int, ...]:
    import pywt

    length = pywt.Wavelet(str(p["wavelet"])).dec_len
    return _uniform(min(64, length * 2 ** int(p["levels"])), ndim)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "gaussian",
            gaussian,
            {
                "sigma": Param(1.0, float, "standard deviation in voxels", 0.0, 50.0),
                "truncate": Param(4.0, float, "kernel radius in sigmas", 0.5, 10.0),
            },
            lambda p, n: _uniform(math.floor(float(p["truncate"]) * float(p["sigma"]) + 0.5), n),
            True,
            "Gaussian smoothing",
        ),
        Method(
            "median",
            median,
            {"size": Param(3, int, "window edge in voxels (odd)", 1, 99)},
            lambda p, n: _uniform(int(p["size"]) // 2, n),
            True,
            "median filter (salt-and-pepper noise, zingers)",
        ),
        Method(
            "bilateral",
            bilateral,
            {
                "sigma_color": Param(0.1, float, "grey-value standard deviation", 1e-6, 1e6),
                "sigma_spatial": Param(1.5, float, "spatial standard deviation (pixels)", 0.1, 20),
                "win_size": Param(0, int, "window edge (0: from sigma_spatial)", 0, 99),
            },
            lambda p, n: _uniform(
                _bilateral_window(p["sigma_spatial"], p["win_size"]) // 2, n, slicewise=True
            ),
            True,
            "edge-preserving bilateral filter (per slice)",
            slicewise=True,
        ),
        Method(
            "nl-means",
            nl_means,
            {
                "h": Param(
                    0.05, float, "filter strength in grey values (about the noise sigma)", 0, 1e6
                ),
                "patch_size": Param(5, int, "patch edge in voxels", 1, 21),
                "patch_distance": Param(6, int, "search radius in voxels", 1, 30),
                "fast_mode": Param(True, bool, "the fast (uniform patch weight) algorithm"),
            },
            lambda p, n: _uniform(int(p["patch_size"]) // 2 + int(p["patch_distance"]) + 1, n),
            True,
            "non-local means",
        ),
        Method(
            "tv",
            total_variation,
            {
                "weight": Param(0.1, float, "denoising weight (higher: smoother)", 1e-6, 1e3),
                "max_num_iter": Param(100, int, "iterations at most", 1, 10000),
                "eps": Param(2e-4, float, "relative energy change that stops the iterations", 0, 1),
            },
            lambda p, n: _uniform(min(32, 2 * int(p["max_num_iter"])), n),
            False,
            "total-variation (Chambolle); chunked result approximate (halo 32)",
        ),
        Method(
            "wavelet",
            wavelet,
            {
                "sigma": Param(0.0, float, "noise standard deviation (0: estimated)", 0, 1e6),
                "wavelet": Param("db2", str, "PyWavelets wavelet name"),
                "mode": Param("soft", str, "thresholding", choices=("soft", "hard")),
                "method": Param(
                    "BayesShrink", str, "threshold rule", choices=("BayesShrink", "VisuShrink")
                ),
                "levels": Param(3, int, "decomposition levels", 1, 8),
            },
            _wavelet_halo,
            False,
            "wavelet shrinkage; chunked result approximate",
            needs_noise=("sigma",),
        ),
        Method(
            "bm3d",
            bm3d_filter,
            {
                "sigma": Param(0.0, float, "noise standard deviation (0: estimated)", 0, 1e6),
                "profile": Param(
                    "np", str, "BM3D profile", choices=("np", "refilter", "vn", "high", "deb")
                ),
            },
            lambda p, n: _uniform(24, n, slicewise=True),
            False,
            "BM3D (per slice); chunked result approximate (halo 24)",
            slicewise=True,
            needs_noise=("sigma",),
        ),
        Method(
            "rings",
            rings,
            {
                "size": Param(21, int, "median window across the detector", 3, 201),
                "dim": Param(1, int, "1D or 2D median", choices=(1, 2)),
                "backend": Param(
                    "auto", str, "tomopy, algotom or auto", choices=("auto", "tomopy", "algotom")
                ),
                "axis": Param(0, int, "sinogram axis (slices along axis 0)", 0, 0),
            },
            lambda p, n: (0,) * n,
            True,
            "stripe removal in sinograms (ring artefacts), tomopy or algotom",
            slicewise=True,
            whole_slices=True,
        ),
    )
}


def method(name: str) -> Method:
    """The :class:`Method` called ``name``.

    Raises
    ------
    InputError
        For an unknown name (the message lists the known ones).
    """
    if name not in METHODS:
        raise InputError(
            f"method: unknown denoising method {name!r}; expected one of {', '.join(METHODS)}"
        )
    return METHODS[name]


def resolve_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults completed by ``params``, each value converted to its type and checked.

    Values may be strings (from ``--param k=v``). Raises :class:`InputError` naming the
    parameter for an unknown name, a wrong type or a value out of range.

    Examples
    --------
    >>> resolve_params("gaussian", {"sigma": "2"})
    {'sigma': 2.0, 'truncate': 4.0}
    """
    spec = method(name).params
    out = {key: p.default for key, p in spec.items()}
    for key, value in (params or {}).items():
        if key not in spec:
            raise InputError(
                f"{key}: not a parameter of {name}; expected one of {', '.join(spec)}", field=key
            )
        p = spec[key]
        try:
            if p.kind is bool and isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                converted: Any = value.lower() in {"true", "1", "yes"}
            elif p.kind is int and isinstance(value, float) and value.is_integer():
                converted = int(value)
            elif p.kind is int and isinstance(value, str):
                converted = int(value)
            else:
                converted = p.kind(value)
        except (TypeError, ValueError):
            raise InputError(
                f"{key}: expected {p.kind.__name__} for {name}, got {value!r}", field=key
            ) from None
        if isinstance(converted, float) and not math.isfinite(converted):
            raise InputError(f"{key}: expected a finite number, got {value!r}", field=key)
        if p.choices is not None and converted not in p.choices:
            raise InputError(
                f"{key}: expected one of {', '.join(map(str, p.choices))}, got {value!r}", field=key
            )
        if p.low is not None and p.kind in (int, float) and not p.low <= converted <= p.high:
            raise InputError(
                f"{key}: expected a value from {p.low:g} to {p.high:g} for {name}, got {value!r}",
                field=key,
            )
        out[key] = converted
    if name == "median" and out["size"] % 2 == 0:
        raise InputError(f"size: expected an odd window edge, got {out['size']}", field="size")
    return out
