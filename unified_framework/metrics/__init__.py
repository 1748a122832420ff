"""Scoring of segmentations against ground truth, and resource measurement.

* :mod:`.overlap` -- confusion matrix, Dice, IoU, precision, recall, F1, volumes
* :mod:`.surface` -- Hausdorff distance, HD95, average symmetric surface distance
* :mod:`.instance` -- instance matching at IoU thresholds, panoptic quality
* :mod:`.report` -- :func:`score_volumes` / :func:`score_instances` tables
* :mod:`.resources` -- :class:`ResourceMeter` (time, CPU, memory, GPU)

Conventions (empty masks, spacing) are documented in each module and in
``docs/scoring.md``.
"""

from .instance import instance_scores, iou_matrix, match_instances
from .overlap import confusion_matrix, overlap_scores, scores_from_confusion, volume_scores
from .report import score_instances, score_volumes
from .resources import ResourceMeter, ResourceUsage
from .surface import surface_distances, surface_mask, surface_metrics, surface_scores

__all__ = [
    "ResourceMeter",
    "ResourceUsage",
    "confusion_matrix",
    "instance_scores",
    "iou_matrix",
    "match_instances",
    "overlap_scores",
    "score_instances",
    "score_volumes",
    "scores_from_confusion",
    "surface_distances",
    "surface_mask",
    "surface_metrics",
    "surface_scores",
    "volume_scores",
]
