"""Classical (non-learned) segmentation baselines: multi-Otsu and marker watershed.

Plain functions over numpy arrays, used as reference methods next to the learned
models (dashboard "Segmentation comparison" page, ``mdlma segment classical``).
Both split a grey-value image into ``classes`` intensity classes and return labels
``0 .. classes-1`` ordered from dark to bright; :func:`relabel` maps that order onto
a dataset's own class numbering (several intensity classes may map to one class,
e.g. air and soft tissue both to background). :func:`run_classical` does the same on
files and scores the result, for the CLI and SLURM jobs; :func:`evaluate_command`
measures and scores any other segmentation program the same way.

Examples
--------
>>> import numpy as np
>>> from unified_framework.classical import segment
>>> image = np.repeat([0.0, 1.0, 2.0], 10).reshape(1, 3, 10)
>>> segment(image, "multi-otsu", classes=3)[0, :, 0].tolist()
[0, 1, 2]
"""

from .baselines import METHODS, majority_order, multi_otsu, relabel, segment, watershed_classes
from .run import ORDER_FROM_TRUTH, evaluate_command, run_classical, score_rows

__all__ = [
    "METHODS",
    "ORDER_FROM_TRUTH",
    "evaluate_command",
    "majority_order",
    "multi_otsu",
    "relabel",
    "run_classical",
    "score_rows",
    "segment",
    "watershed_classes",
]
