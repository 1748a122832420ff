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
    """

    result: AnalysisResult
    ranges: dict[str, list[float | None]]
    scenarios: dict[str, dict[str, Any]]
    uncertain_fraction: float
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **self.result.to_dict(),
            "uncertainty": {
                "ranges": self.ranges,
                "uncertain_fraction": self.uncertain_fraction,
                "scenarios": self.scenarios,
                **self.settings,
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
    )
