"""The score landscape: trials as a table, their parameters reduced to 3D (UMAP), coloured by score.

:func:`load_umap` is the one place that imports umap-learn: umap's package imports
TensorFlow (for ``ParametricUMAP``), and TensorFlow loaded before triton crashes the
process; the parametric part is not needed here, so it is kept from loading at all.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Below this many trials UMAP has too few neighbours; PCA is used instead.
MIN_UMAP_TRIALS = 10


def load_umap() -> Any:
    """The ``umap.UMAP`` class, imported without TensorFlow.

    ``umap/__init__`` tries ``from .parametric_umap import ...`` (TensorFlow) inside a
    ``try/except ImportError``; a ``None`` entry in ``sys.modules`` makes that import
    fail at once, so umap falls back to its placeholder and TensorFlow never loads.
    torch and triton, when installed, are imported first in case TensorFlow is already
    loaded by someone else (the import order that does not crash).

    Examples
    --------
    >>> UMAP = load_umap()               # doctest: +SKIP
    >>> UMAP(n_components=3).fit_transform(points)  # doctest: +SKIP
    """
    if "umap" not in sys.modules:
        for name in ("torch", "triton"):
            if name in sys.modules or "tensorflow" in sys.modules:
                try:
                    __import__(name)
                except ImportError:
                    pass
        blocked = "umap.parametric_umap" not in sys.modules
        if blocked:
            sys.modules["umap.parametric_umap"] = None  # type: ignore[assignment]
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import umap
        finally:
            if blocked and sys.modules.get("umap.parametric_umap") is None:
                del sys.modules["umap.parametric_umap"]
        _cache_compiled_functions(("umap.",))
    import umap

    return umap.UMAP


def _cache_compiled_functions(prefixes: tuple[str, ...]) -> int:
    """Turn on numba's on-disk cache for the jitted functions of the modules named
    ``prefix...`` that do not use it; the number turned on.

    umap-learn compiles about 250 numba functions on its first fit in every process
    (about 10 s, where the fit of a landscape itself takes milliseconds) and caches none
    of them; cached, a later process loads them compiled. numba keeps the cache beside
    the package when it may write there, else in the user's cache folder
    (``NUMBA_CACHE_DIR``).
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    turned_on = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(prefixes):
            continue
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and isinstance(
                getattr(value, "_cache", None), NullCache
            ):
                value.enable_caching()
                turned_on += 1
    return turned_on


def trials_frame(trials: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per trial: ``number``, ``state``, ``score``, the parameters, time/CPU/memory, ``error``."""
    rows = []
    for t in trials:
        resources = t.get("resources") or {}
        rows.append(
            {
                "number": t["number"],
                "state": t["state"],
                "score": t.get("score"),
                **{k: v for k, v in t["params"].items()},
                "wall_time_s": resources.get("wall_time_s"),
                "cpu_time_s": resources.get("cpu_time_s"),
                "peak_rss_mb": (resources.get("peak_rss_bytes") or 0) / 2**20 or None,
                "error": t.get("error"),
            }
        )
    return pd.DataFrame(rows)


def encode(frame: pd.DataFrame, params: Sequence[str], log: Sequence[str] = ()) -> np.ndarray:
    """Parameters as numbers scaled to [0, 1] (choices: their index; ``log`` ones on a log scale)."""
    columns = []
    for name in params:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            x = values.astype(float).to_numpy()
            if name in log:
                x = np.log(np.clip(x, 1e-12, None))
        else:
            x = pd.Categorical(values.astype(str)).codes.astype(float)
        span = float(np.nanmax(x) - np.nanmin(x)) if len(x) else 0.0
        columns.append((x - np.nanmin(x)) / span if span > 0 else np.zeros_like(x))
    return np.column_stack(columns) if columns else np.zeros((len(frame), 0))


def embed(points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """3D coordinates of the parameter points: UMAP from :data:`MIN_UMAP_TRIALS` trials, else PCA.

    Returns the coordinates (``n x 3``) and the method used (``"umap"``, ``"pca"`` or
    ``"parameters"`` when there are at most three parameters: they are the axes
    themselves, an embedding could only distort them).

    Examples
    --------
    >>> coords, how = embed(np.array([[0.0, 1.0], [1.0, 0.0]]))
    >>> coords.shape, how
    ((2, 3), 'parameters')
    """
    n, dims = points.shape
    if dims <= 3:
        out = np.zeros((n, 3))
        out[:, :dims] = points
        return out, "parameters"
    if n >= MIN_UMAP_TRIALS:
        UMAP = load_umap()
        reducer = UMAP(
            n_components=3, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1, init="random"
        )
        return np.asarray(reducer.fit_transform(points)), "umap"
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = np.zeros((n, 3))
    projected = centred @ vt[:3].T
    out[:, : projected.shape[1]] = projected
    return out, "pca"


def landscape(
    trials: Sequence[Mapping[str, Any]], log: Sequence[str] = (), seed: int = 0
) -> tuple[pd.DataFrame, str]:
    """The complete trials with ``x``, ``y``, ``z`` (the 3D embedding of their parameters) and ``score``.

    Parameters are scaled to [0, 1] first (:func:`encode`; ``log`` ones on a log scale).

    Examples
    --------
    >>> trials = [{"number": i, "state": "complete", "score": i / 4,
    ...            "params": {"a": i, "b": 1.0 + i % 2, "c": "xy"[i % 2], "d": i * i}}
    ...           for i in range(4)]
    >>> frame, how = landscape(trials)
    >>> how, list(frame.columns[:3]), list(frame.columns[-3:])
    ('pca', ['number', 'state', 'score'], ['x', 'y', 'z'])
    """
    complete = [t for t in trials if t["state"] == "complete"]
    frame = trials_frame(complete)
    if frame.empty:
        return frame.assign(x=[], y=[], z=[]), "none"
    params = list(complete[0]["params"])
    coords, how = embed(encode(frame, params, log), seed)
    return frame.assign(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2]), how
