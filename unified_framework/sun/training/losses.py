"""Loss and scores for soft (probability) targets with an ignore mask."""

from __future__ import annotations

import numpy as np
import torch


def class_weights(labels: list[np.ndarray], classes: int) -> np.ndarray:
    """Inverse square-root class frequencies, normalised to mean 1 (absent classes get the largest)."""
    counts = np.zeros(classes, np.float64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=classes)[:classes]
    frequency = counts / counts.sum()
    weights = 1.0 / np.sqrt(np.maximum(frequency, frequency[frequency > 0].min()))
    return (weights / weights.mean()).astype(np.float32)


def soft_dice_ce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted cross-entropy plus (1 - mean soft Dice), both over valid pixels.

    Parameters
    ----------
    logits : torch.Tensor
        ``(n, classes, H, W)``.
    targets : torch.Tensor
        ``(n, classes, H, W)`` probabilities.
    valid : torch.Tensor
        ``(n, H, W)`` 1 where the loss counts, 0 on padding.
    weights : torch.Tensor, optional
        ``(classes,)`` cross-entropy class weights.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    per_class = -(targets * log_p)
    if weights is not None:
        per_class = per_class * weights.view(1, -1, 1, 1)
    mask = valid.unsqueeze(1)
    cross_entropy = (per_class * mask).sum() / mask.sum().clamp_min(1)
    p = log_p.exp() * mask
    t = targets * mask
    intersection = (p * t).sum(dim=(0, 2, 3))
    denominator = p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3))
    dice = (2 * intersection + 1e-5) / (denominator + 1e-5)
    return cross_entropy + (1 - dice.mean())


def dice_per_class(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """Per-class Dice of two label arrays (NaN where a class is absent from both)."""
    from ...metrics.overlap import confusion_matrix, scores_from_confusion

    matrix, _ = confusion_matrix(predicted.ravel(), truth.ravel(), labels=range(classes))
    return scores_from_confusion(matrix)["dice"]
