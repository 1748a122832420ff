"""Acquisition functions: which unlabelled slices to label next.

Scoring streams through the pool slice by slice (:func:`score_pool`): each slice is
read, normalised and predicted, and only a few numbers per slice are kept (its mean
uncertainties and a feature vector), so memory does not grow with the slice count
beyond ``slices x feature width`` floats.

========== ===========================================================================
function   ranks unlabelled slices by
========== ===========================================================================
random     nothing (a uniform random choice; the baseline)
entropy    mean pixel entropy of the predicted class distribution (normalised to 0..1)
margin     mean ``1 - (p1 - p2)`` of the two most probable classes
bald       mean mutual information between the prediction and the weights, estimated
           with Monte-Carlo dropout (Gal et al. 2017; the network needs dropout)
coreset    k-centre greedy on the slice embeddings (Sener & Savarese 2018): each pick
           is the slice farthest from every labelled or already picked slice
hybrid     the ``hybrid_factor x batch`` most uncertain slices (entropy), then
           k-centre greedy among them (uncertain *and* diverse)
========== ===========================================================================

Pixel scores are averaged over the pixels inside the volume (diagonal slices' corners
do not count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .pool import SliceId, SlicePool

FUNCTIONS = ("random", "entropy", "margin", "bald", "coreset", "hybrid")
#: Functions that need network predictions (all but random).
NEEDS_MODEL = frozenset(FUNCTIONS) - {"random"}


def check_function(name: str) -> str:
    """Return ``name`` if it is an acquisition function.

    Raises
    ------
    InputError
        For unknown names.

    Examples
    --------
    >>> check_function("bald")
    'bald'
    """
    if name not in FUNCTIONS:
        raise InputError(
            f"acquisition function {name!r}; expected one of {', '.join(FUNCTIONS)}",
            field="function",
        )
    return name


@dataclass
class PoolScores:
    """What :func:`score_pool` keeps per slice.

    Attributes
    ----------
    ids : list of SliceId
    entropy, margin : numpy.ndarray
        ``(n,)`` mean pixel uncertainties (higher: less certain).
    bald : numpy.ndarray or None
        ``(n,)`` mean mutual information (only with MC samples).
    features : numpy.ndarray
        ``(n, width)`` slice embeddings (the network's last features, averaged).
    """

    ids: list[SliceId]
    entropy: np.ndarray
    margin: np.ndarray
    bald: np.ndarray | None
    features: np.ndarray


def pixel_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of class distributions ``(classes, ...)`` divided by ``log(classes)`` (0..1).

    Examples
    --------
    >>> float(pixel_entropy(np.array([[0.5], [0.5]]))[0])
    1.0
    """
    p = np.clip(probabilities, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=0) / math.log(probabilities.shape[0])


def pixel_margin(probabilities: np.ndarray) -> np.ndarray:
    """``1 - (p1 - p2)`` of the two most probable classes, per pixel (0..1).

    Examples
    --------
    >>> round(float(pixel_margin(np.array([[0.9], [0.1]]))[0]), 6)
    0.2
    """
    top = np.sort(probabilities, axis=0)
    return 1.0 - (top[-1] - top[-2])


class _Embedding:
    """Captures the input of the network's last convolution (its per-pixel features)."""

    def __init__(self, network: Any) -> None:
        import torch

        convolutions = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
        self.value = None
        self.handle = convolutions[-1].register_forward_hook(self._keep)

    def _keep(self, module: Any, inputs: tuple, output: Any) -> None:
        self.value = inputs[0].detach().float().mean(dim=(2, 3))

    def close(self) -> None:
        self.handle.remove()


def predict_slice(
    network: Any,
    image: np.ndarray,
    normalize: Callable[[np.ndarray], np.ndarray],
    device: Any = "cpu",
    divisor: int = 1,
) -> np.ndarray:
    """Class probabilities ``(classes, rows, columns)`` of one raw slice image ``(channels, rows, columns)``.

    ``normalize`` maps raw images ``(k, channels, rows, columns)`` to network inputs;
    the image is padded (edge values) to a multiple of ``divisor`` and cropped back.
    """
    return _forward(network, image[None], normalize, device, divisor)[0][0]


def _forward(
    network: Any,
    images: np.ndarray,
    normalize: Callable[[np.ndarray], np.ndarray],
    device: Any,
    divisor: int,
    samples: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities ``(k, classes, r, c)`` and, with ``samples``, MC-dropout samples ``(s, k, classes, r, c)``."""
    import torch
    import torch.nn.functional as F

    from ..networks import mc_dropout

    rows, cols = images.shape[-2:]
    x = torch.from_numpy(normalize(images.astype(np.float32, copy=True))).to(device)
    pad_r, pad_c = -rows % divisor, -cols % divisor
    if pad_r or pad_c:
        x = F.pad(x, (0, pad_c, 0, pad_r), mode="replicate")
    with torch.no_grad():
        probabilities = torch.softmax(network(x).float(), 1)[..., :rows, :cols].cpu().numpy()
        drawn = None
        if samples:
            with mc_dropout(network):
                drawn = np.stack(
                    [
                        torch.softmax(network(x).float(), 1)[..., :rows, :cols].cpu().numpy()
                        for _ in range(samples)
                    ]
                )
    return probabilities, drawn


def has_dropout(network: Any) -> bool:
    """True if ``network`` has an active dropout layer (needed for BALD)."""
    import torch

    return any(
        isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in network.modules()
    )


def score_pool(
    network: Any,
    pool: SlicePool,
    normalize: Callable[[np.ndarray], np.ndarray],
    *,
    ids: Iterable[SliceId] | None = None,
    mc_samples: int = 0,
    device: Any = "cpu",
    divisor: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> PoolScores:
    """Score slices one at a time (bounded memory); see the module documentation.

    Parameters
    ----------
    network : torch.nn.Module
        In eval mode; its last convolution's input gives the embeddings.
    pool : SlicePool
    normalize : callable
        Raw images ``(k, channels, rows, cols)`` to network inputs (in place allowed).
    ids : iterable of SliceId, optional
        Slices to score (default: the whole pool).
    mc_samples : int
        Monte-Carlo dropout passes for BALD (0: no BALD).
    device : str or torch.device
    divisor : int
        Slices are padded to a multiple of it (SUN's U-Net needs ``2**(depth-1)``).
    progress : callable, optional
        Called with (done, total) after each slice.

    Returns
    -------
    PoolScores

    Raises
    ------
    InputError
        If ``mc_samples`` is asked of a network without dropout.
    """
    ids = list(pool.ids if ids is None else ids)
    if mc_samples and not has_dropout(network):
        raise InputError(
            "bald: the network has no dropout; train it with dropout > 0 for Monte-Carlo dropout",
            field="function",
        )
    network.eval()
    hook = _Embedding(network)
    entropy = np.zeros(len(ids), np.float64)
    margin = np.zeros(len(ids), np.float64)
    bald = np.zeros(len(ids), np.float64) if mc_samples else None
    features: list[np.ndarray] = []
    try:
        for n, sid in enumerate(ids):
            image = pool.image(sid)
            probabilities, drawn = _forward(
                network, image[None], normalize, device, divisor, mc_samples
            )
            features.append(hook.value[0].cpu().numpy())  # type: ignore[index]  # the deterministic pass
            inside = pool.footprint(sid)
            p = probabilities[0]
            entropy[n] = pixel_entropy(p)[inside].mean()
            margin[n] = pixel_margin(p)[inside].mean()
            if bald is not None and drawn is not None:
                mean = drawn[:, 0].mean(axis=0)
                expected = np.mean([pixel_entropy(s) for s in drawn[:, 0]], axis=0)
                # Mutual information in units of log(classes), like the entropy.
                bald[n] = (pixel_entropy(mean) - expected)[inside].mean()
            if progress:
                progress(n + 1, len(ids))
    finally:
        hook.close()
    width = features[0].shape[0] if features else 0
    return PoolScores(
        ids,
        entropy,
        margin,
        bald,
        np.stack(features) if features else np.zeros((0, width), np.float32),
    )


def k_center_greedy(
    features: np.ndarray, centres: np.ndarray, candidates: Sequence[int], count: int
) -> list[int]:
    """Pick ``count`` of ``candidates`` (row numbers of ``features``), each farthest from all centres so far.

    ``centres`` are row numbers already covered (the labelled slices); with none, the
    first pick is the candidate farthest from the candidates' mean.

    Examples
    --------
    >>> f = np.array([[0.0], [0.1], [5.0], [10.0]])
    >>> k_center_greedy(f, np.array([0]), [1, 2, 3], 2)
    [3, 2]
    """
    candidates = list(candidates)
    chosen: list[int] = []
    cand = features[candidates].astype(np.float64)
    if len(centres):
        distance = np.full(len(candidates), np.inf)
        for start in range(0, len(centres), 256):  # bounded memory for big labelled sets
            block = features[np.asarray(centres)[start : start + 256]].astype(np.float64)
            d = np.sqrt(((cand[:, None, :] - block[None]) ** 2).sum(-1)).min(axis=1)
            distance = np.minimum(distance, d)
    else:
        distance = np.sqrt(((cand - cand.mean(axis=0)) ** 2).sum(-1))
    taken = np.zeros(len(candidates), bool)
    for _ in range(min(count, len(candidates))):
        masked = np.where(taken, -np.inf, distance)
        pick = int(np.argmax(masked))
        taken[pick] = True
        chosen.append(candidates[pick])
        distance = np.minimum(distance, np.sqrt(((cand - cand[pick]) ** 2).sum(-1)))
    return chosen


def select(
    function: str,
    pool_ids: Sequence[SliceId],
    labelled: Iterable[SliceId],
    batch_size: int,
    rng: np.random.Generator,
    scores: PoolScores | None = None,
    hybrid_factor: int = 4,
) -> list[SliceId]:
    """The next ``batch_size`` slices to label (never a labelled one).

    Parameters
    ----------
    function : str
        One of :data:`FUNCTIONS`.
    pool_ids : sequence of SliceId
        The whole pool.
    labelled : iterable of SliceId
        Slices with labels already.
    batch_size : int
    rng : numpy.random.Generator
        For random (and ties).
    scores : PoolScores, optional
        From :func:`score_pool` over the whole pool (needed by all but random; BALD
        needs ``mc_samples``).
    hybrid_factor : int
        Hybrid: k-centre greedy among the ``hybrid_factor * batch_size`` most uncertain.

    Returns
    -------
    list of SliceId
        In the order picked (most informative first).

    Raises
    ------
    InputError
        Unknown function, a batch size below 1, fewer unlabelled slices than the
        batch, or missing scores.

    Examples
    --------
    >>> ids = [SliceId(0, "z", i) for i in range(5)]
    >>> picked = select("random", ids, ids[:2], 2, np.random.default_rng(0))
    >>> len(picked), set(picked) & set(ids[:2])
    (2, set())
    """
    check_function(function)
    if int(batch_size) < 1:
        raise InputError(
            f"batch size {batch_size!r}; expected a positive integer", field="batch_size"
        )
    labelled = set(labelled)
    unlabelled = [i for i, sid in enumerate(pool_ids) if sid not in labelled]
    if len(unlabelled) < batch_size:
        raise InputError(
            f"pool: {len(unlabelled)} unlabelled slice(s) left but the batch size is {batch_size}; "
            "lower the batch size or add volumes to the pool",
            field="batch_size",
        )
    if function == "random":
        return [pool_ids[i] for i in rng.choice(unlabelled, batch_size, replace=False)]
    if scores is None or list(scores.ids) != list(pool_ids):
        raise InputError(f"{function}: needs the pool's scores (score_pool over the whole pool)")
    candidates = np.asarray(unlabelled)
    tie_break = rng.random(len(candidates)) * 1e-9  # equal scores: a random order
    if function in ("entropy", "margin", "bald"):
        values = getattr(scores, function)
        if values is None:
            raise InputError("bald: needs Monte-Carlo dropout samples (mc_samples > 0)")
        order = np.argsort(-(values[candidates] + tie_break), kind="stable")
        return [pool_ids[i] for i in candidates[order[:batch_size]]]
    centres = np.asarray([i for i, sid in enumerate(pool_ids) if sid in labelled], dtype=int)
    if function == "hybrid":
        keep = min(len(candidates), max(batch_size, hybrid_factor * batch_size))
        order = np.argsort(-(scores.entropy[candidates] + tie_break), kind="stable")
        candidates = candidates[order[:keep]]
    picked = k_center_greedy(scores.features, centres, candidates.tolist(), batch_size)
    return [pool_ids[i] for i in picked]
