"""Active learning for sparse segmentation: a pool of slices, acquisition functions,
training rounds, simulation with an oracle and the human loop's project folder.

See ``docs/active-learning.md``. Torch is imported on first use of a sub-module.
"""

__all__ = ["acquisition", "pool"]
