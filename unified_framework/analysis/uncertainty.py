"""How far the segmentation's uncertainty moves each quantity.

SUN writes, beside the labels, the fused class probabilities (``classes x z x y x``)
and their normalised entropy (docs/sun.md). A voxel is *uncertain* when its most
probable class has a probability below ``threshold`` (or, with the entropy only, when
the entropy exceeds ``entropy_threshold``). Its *alternative* is the second most
probable class (with the entropy only: the label of a differing face neighbour, the
usual boundary ambiguity).

The range of every quantity comes from recomputing it with the uncertain voxels
assigned each way (:func:`quantify_uncertainty`): for each of residual material,
degradation layer and bone, once *grown* (uncertain voxels whose alternative is that
class take it) and once *shrunk* (uncertain voxels of that class take their
alternative). The reported range is the smallest and largest value over these six
scenarios and the segmentation itself; two samples differ beyond the segmentation's
doubt when their ranges do not overlap.

With the probabilities, the range can also come from *sampling*
(:func:`sample_quantities`): ``N`` label maps are drawn from the fused per-voxel
probabilities (:func:`sample_labels`: a seeded generator, draws independent per voxel
or spatially correlated by a Gaussian of ``smooth`` voxels), every quantity is
recomputed on each, and the mean, standard deviation and the 2.5-97.5 % percentile
range are reported next to the assigned-each-way range. The assigned-each-way range
is the extreme (every uncertain voxel one way); the sampled range is what the
probabilities make likely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .quantities import SLAB, AnalysisResult, _check_labels, quantify
from .roles import resolve_roles


@dataclass
class UncertaintyResult:
    """The segmentation's quantities and their range under its uncertainty.

    Attributes
    ----------
    result : AnalysisResult
        The quantities of the labels as given.
    ranges : dict
        ``name -> [low, high]`` for every scalar and every shell's BV/TV
        (``bv_tv_<inner>_<outer>um``); ``None`` where undefined in every scenario.
    scenarios : dict
        ``scenario -> row`` (:meth:`AnalysisResult.row`) of each recomputation.
    uncertain_fraction : float
        Share of the voxels that are uncertain.
    settings : dict
        The threshold used and where the uncertainty came from.
    sampling : dict or None
        With ``samples``: :func:`sample_quantities`' mean, sd and 2.5-97.5 % range.
    """

    result: AnalysisResult
    ranges: dict[str, list[float | None]]
    scenarios: dict[str, dict[str, Any]]
    uncertain_fraction: float
    settings: dict[str, Any]
    sampling: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **self.result.to_dict(),
            "uncertainty": {
                "ranges": self.ranges,
                "uncertain_fraction": self.uncertain_fraction,
                "scenarios": self.scenarios,
                **self.settings,
                "sampling": self.sampling,
            },
        }


def uncertain_voxels(
    labels: np.ndarray,
    probabilities: Any = None,
    entropy: Any = None,
    threshold: float = 0.9,
    entropy_threshold: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """The uncertain voxels and each voxel's alternative label.

    Parameters
    ----------
    labels : numpy.ndarray ``(z, y, x)``
    probabilities : array-like ``(classes, z, y, x)``, optional
        Fused class probabilities; channel ``c`` is label value ``c`` (SUN's layout).
    entropy : array-like ``(z, y, x)``, optional
        Normalised entropy (0..1), used when there are no probabilities.
    threshold : float
        A voxel is certain when its largest probability reaches this.
    entropy_threshold : float
        With the entropy only: uncertain above this.

    Returns
    -------
    uncertain : numpy.ndarray of bool
    alternative : numpy.ndarray of labels' dtype
        Second most probable class (or a differing neighbour's label); equal to the
        label where there is none.

    Examples
    --------
    >>> labels = np.zeros((1, 1, 3), np.uint8)
    >>> p = np.array([[[[0.95, 0.6, 0.3]]], [[[0.05, 0.4, 0.7]]]], np.float32)
    >>> u, alt = uncertain_voxels(labels, p)
    >>> u.ravel().tolist(), alt.ravel().tolist()
    ([False, True, True], [1, 1, 1])
    """
    shape = labels.shape
    uncertain = np.zeros(shape, bool)
    alternative = labels.copy()
    if probabilities is not None:
        if len(probabilities.shape) != 4 or tuple(probabilities.shape[1:]) != shape:
            raise InputError(
                f"probabilities: shape {tuple(probabilities.shape)}; expected (classes, {', '.join(map(str, shape))})",
                field="uncertainty",
            )
        if probabilities.shape[0] < 2:
            raise InputError("probabilities: need at least 2 classes", field="uncertainty")
        for start in range(0, shape[0], SLAB):
            zs = slice(start, min(start + SLAB, shape[0]))
            p = np.asarray(probabilities[:, zs], dtype=np.float32)
            order = np.argsort(p, axis=0)
            top = np.take_along_axis(p, order[-1:], axis=0)[0]
            uncertain[zs] = top < threshold
            second = order[-2].astype(labels.dtype)
            first = order[-1].astype(labels.dtype)
            # The alternative of a voxel whose label is not the argmax (labels edited
            # after prediction) is the argmax.
            alternative[zs] = np.where(first == labels[zs], second, first)
    elif entropy is not None:
        ent = np.asarray(entropy)
        if ent.shape != shape:
            raise InputError(
                f"entropy: shape {ent.shape} does not match the labels {shape}", field="uncertainty"
            )
        uncertain = ent > entropy_threshold
        high = ndi.maximum_filter(labels, size=3)
        low = ndi.minimum_filter(labels, size=3)
        alternative = np.where(high != labels, high, low).astype(labels.dtype)
    else:
        raise InputError(
            "uncertainty: give the fused probabilities or the entropy", field="uncertainty"
        )
    uncertain &= alternative != labels
    return uncertain, alternative


def quantify_uncertainty(
    labels: Any,
    spacing: Sequence[float] | float | None,
    probabilities: Any = None,
    entropy: Any = None,
    *,
    threshold: float = 0.9,
    entropy_threshold: float = 0.3,
    samples: int = 0,
    seed: int = 0,
    smooth: float = 0.0,
    progress: Any = None,
    **kwargs: Any,
) -> UncertaintyResult:
    """Quantities of ``labels`` and their ranges over the uncertain voxels assigned each way.

    Parameters
    ----------
    labels, spacing
        As for :func:`~.quantities.quantify`.
    probabilities, entropy, threshold, entropy_threshold
        As for :func:`uncertain_voxels`.
    samples : int
        With the probabilities: also draw this many label maps from them
        (:func:`sample_quantities`; 0: no sampling).
    seed, smooth
        The draws' seed and correlation length in voxels (:func:`sample_labels`).
    progress : callable, optional
        Called with the scenario name before each recomputation (a CLI's progress bar).
    **kwargs
        Passed to :func:`~.quantities.quantify` (roles, roi, shells, ...).

    Returns
    -------
    UncertaintyResult

    Examples
    --------
    >>> from unified_framework.data.degrading import make_degrading_cylinder
    >>> labels, _ = make_degrading_cylinder((4, 64, 64))
    >>> p = np.zeros((4,) + labels.shape, np.float32)
    >>> for c in range(4): p[c][labels == c] = 1.0
    >>> p[2, :, 30:34, 30:34], p[3, :, 30:34, 30:34] = 0.55, 0.45   # doubt in the core
    >>> u = quantify_uncertainty(labels, 5.0, p, shells=0)
    >>> low, high = u.ranges["residual_volume_mm3"]
    >>> bool(low < u.result.values["residual_volume_mm3"] <= high)
    True
    """
    if not (0 < threshold <= 1) or not math.isfinite(entropy_threshold):
        raise InputError(f"threshold {threshold!r} must lie in (0, 1]", field="threshold")
    name = kwargs.get("name", "labels")
    labels = _check_labels(labels, name)
    roles = resolve_roles(kwargs.pop("roles", None))
    uncertain, alternative = uncertain_voxels(
        labels, probabilities, entropy, threshold, entropy_threshold
    )
    base = quantify(labels, spacing, roles=roles, **kwargs)
    scenarios: dict[str, dict[str, Any]] = {"segmentation": base.row()}
    if uncertain.any():
        for role in ("residual", "layer", "bone"):
            value = getattr(roles, role)
            if value is None:
                continue
            for way in ("grown", "shrunk"):
                if way == "grown":
                    change = uncertain & (alternative == value)
                else:
                    change = uncertain & (labels == value)
                if not change.any():
                    continue
                if progress is not None:
                    progress(f"{role} {way}")
                variant = labels.copy()
                variant[change] = alternative[change] if way == "shrunk" else value
                try:
                    scenarios[f"{role} {way}"] = quantify(
                        variant, spacing, roles=roles, **kwargs
                    ).row()
                except InputError:
                    # e.g. the implant vanishes in an extreme scenario: no value there
                    continue
                del variant
    sampling = None
    if samples:
        if probabilities is None:
            raise InputError(
                "uncertainty: sampling draws from the fused probabilities; the entropy alone cannot be sampled",
                field="uncertainty",
            )
        sampling = sample_quantities(
            labels.dtype,
            spacing,
            probabilities,
            samples=samples,
            seed=seed,
            smooth=smooth,
            progress=progress,
            roles=roles,
            **kwargs,
        )
    ranges: dict[str, list[float | None]] = {}
    for key in base.row():
        numbers = [
            float(row[key])
            for row in scenarios.values()
            if isinstance(row.get(key), (int, float)) and row.get(key) is not None
        ]
        ranges[key] = [min(numbers), max(numbers)] if numbers else [None, None]
    return UncertaintyResult(
        base,
        ranges,
        scenarios,
        float(uncertain.mean()),
        {
            "threshold": threshold if probabilities is not None else None,
            "entropy_threshold": entropy_threshold if probabilities is None else None,
            "source": "probabilities" if probabilities is not None else "entropy",
        },
        sampling,
    )


def sample_labels(
    probabilities: Any,
    rng: np.random.Generator | int,
    smooth: float = 0.0,
    dtype: Any = np.uint8,
    sample: int = 0,
) -> np.ndarray:
    """One label map drawn from the fused per-voxel class probabilities.

    Each voxel takes class ``c`` with probability ``p_c`` (channel ``c`` is label value
    ``c``, SUN's layout; the probabilities are normalised per voxel). The draw compares a
    uniform number ``u`` with the cumulative probabilities. With ``smooth = 0`` the
    ``u`` are independent per voxel; with ``smooth = s > 0`` they come from white noise
    blurred by a Gaussian of ``s`` voxels and mapped through the normal CDF, so every
    voxel's marginal is still exactly ``p`` while neighbouring voxels err together
    (segmentation errors come in patches, not single voxels).

    The draw runs slab by slab (the probabilities may be a Zarr array); the noise of
    each slab comes from its own generator seeded with ``(seed, sample, slab)`` so the
    result does not depend on the slab order and is reproducible.

    Parameters
    ----------
    probabilities : array-like ``(classes, z, y, x)``
    rng : numpy.random.Generator or int
        The seed (an int), or a generator from which one is drawn.
    smooth : float
        Correlation length of the draws in voxels (Gaussian sigma; 0: independent).
    dtype : numpy dtype
        Of the returned labels.
    sample : int
        Index of the draw (part of the seed).

    Returns
    -------
    numpy.ndarray ``(z, y, x)``

    Examples
    --------
    >>> p = np.zeros((2, 1, 100, 100), np.float32); p[0], p[1] = 0.3, 0.7
    >>> draw = sample_labels(p, 0)
    >>> bool(abs(draw.mean() - 0.7) < 0.02), draw.dtype.name
    (True, 'uint8')
    >>> bool(abs(sample_labels(p, 0, smooth=2.0).mean() - 0.7) < 0.05)
    True
    """
    from scipy.special import ndtr

    if len(probabilities.shape) != 4 or probabilities.shape[0] < 2:
        raise InputError(
            f"probabilities: shape {tuple(probabilities.shape)}; expected (classes >= 2, z, y, x)",
            field="uncertainty",
        )
    if not (math.isfinite(smooth) and smooth >= 0):
        raise InputError(f"smooth: {smooth!r} must be >= 0 voxels", field="smooth")
    seed = int(rng.integers(2**31)) if isinstance(rng, np.random.Generator) else int(rng)
    n_classes, nz, ny, nx = (int(n) for n in probabilities.shape)
    reach = int(4.0 * smooth + 0.5) if smooth > 0 else 0
    # About 4 million voxels per slab (the probabilities' float32 copy is classes x that).
    slab = max(reach, 1, min(SLAB, 2**22 // max(1, ny * nx)))
    out = np.empty((nz, ny, nx), dtype)
    scale = 1.0
    if reach:
        # Variance of blurred unit white noise: the sum of the squared kernel weights.
        delta = np.zeros((2 * reach + 1,) * 3, np.float32)
        delta[reach, reach, reach] = 1.0
        scale = float(np.sqrt((ndi.gaussian_filter(delta, smooth, mode="constant") ** 2).sum()))

    def noise(k: int) -> np.ndarray:
        # Slab k of a noise grid padded by `reach` in y and x; k = -1 and n are the z pads.
        gen = np.random.default_rng([seed, int(sample), k + 1])
        if not reach:
            return gen.random((slab, ny, nx), np.float32)
        return gen.standard_normal((slab, ny + 2 * reach, nx + 2 * reach), np.float32)

    cache: dict[int, np.ndarray] = {}

    def get(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = noise(k)
        return cache[k]

    for k in range(-(-nz // slab)):
        for old in [j for j in cache if j < k - 1]:
            del cache[old]
        z0, z1 = k * slab, min((k + 1) * slab, nz)
        if reach:
            window = np.concatenate([get(k - 1)[-reach:], get(k), get(k + 1)[:reach]])
            ndi.gaussian_filter(window, smooth, output=window, mode="constant")
            g = window[reach : reach + z1 - z0, reach : reach + ny, reach : reach + nx]
            u = ndtr(g / np.float32(scale)).astype(np.float32)
            del window, g
        else:
            u = get(k)[: z1 - z0]
        cumulative = np.array(probabilities[:, z0:z1], dtype=np.float32)
        np.cumsum(cumulative, axis=0, out=cumulative)
        total = cumulative[-1]
        u *= np.where(total > 0, total, np.float32(1.0))
        # The first class whose cumulative probability exceeds u: count the classes passed.
        label = np.zeros(u.shape, np.min_scalar_type(n_classes))
        for c in range(n_classes - 1):
            label += u >= cumulative[c]
        out[z0:z1] = label
        del cumulative, total, u, label
    return out


def sample_quantities(
    labels_dtype: Any,
    spacing: Sequence[float] | float | None,
    probabilities: Any,
    *,
    samples: int = 20,
    seed: int = 0,
    smooth: float = 0.0,
    progress: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Each quantity over label maps drawn from the fused probabilities: mean and 2.5-97.5 % range.

    Parameters
    ----------
    labels_dtype : numpy dtype
        Of the drawn label maps (the segmentation's).
    spacing
        As for :func:`~.quantities.quantify`.
    probabilities : array-like ``(classes, z, y, x)``
    samples : int
        Number of draws ``N``.
    seed : int
        Seed of the draws (the same seed, the same maps).
    smooth : float
        Correlation length of the draws in voxels (:func:`sample_labels`).
    progress : callable, optional
        Called with ``"sample i/N"`` before each draw.
    **kwargs
        Passed to :func:`~.quantities.quantify`.

    Returns
    -------
    dict
        ``samples``, ``seed``, ``smooth_voxels``, ``valid`` (draws with an implant),
        and per quantity ``mean``, ``sd``, ``low`` (2.5 %), ``high`` (97.5 %) -- each a
        ``name -> value`` dict (``None`` where no draw defines the quantity).
    """
    n = int(samples)
    if n < 2:
        raise InputError(f"samples: {samples!r}; give at least 2 draws", field="samples")
    rows = []
    for i in range(n):
        if progress is not None:
            progress(f"sample {i + 1}/{n}")
        drawn = sample_labels(probabilities, seed, smooth, labels_dtype, sample=i)
        try:
            rows.append(quantify(drawn, spacing, **kwargs).row())
        except InputError:
            # the implant vanished in this draw: it defines no quantity
            continue
        del drawn
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    stats: dict[str, dict[str, float | None]] = {k: {} for k in ("mean", "sd", "low", "high")}
    for key in keys:
        numbers = np.array(
            [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))], float
        )
        if numbers.size == 0:
            for k in stats:
                stats[k][key] = None
            continue
        stats["mean"][key] = float(numbers.mean())
        stats["sd"][key] = float(numbers.std(ddof=1)) if numbers.size > 1 else 0.0
        stats["low"][key] = float(np.percentile(numbers, 2.5))
        stats["high"][key] = float(np.percentile(numbers, 97.5))
    return {
        "samples": n,
        "valid": len(rows),
        "seed": int(seed),
        "smooth_voxels": float(smooth),
        **stats,
    }
