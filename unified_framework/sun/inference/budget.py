"""SUN prediction's memory budget: one figure, split once into named parts.

A prediction is given one memory budget (``mdlma sun predict --memory MB``, or the
job's memory with ``--job-memory MB``, which the ``sun-predict`` SLURM template
passes). :class:`MemoryBudget` splits it, and every part is used in one place::

    job memory (SLURM --mem)
      - RUNTIME_RESERVE_MB (Python, torch, the model)      -> halved: the budget (total)
    total
      = chunk_cache      cache of accumulator chunks (file runs: half, when one layer
                         of chunks across the volume fits in it; else nothing)
      + working
          = activations  network activations of one batch (1/2)  -> SlicePredictor
          + groups       one group's slice images and probabilities (3/8)
                                                                  -> max_group_units
          + reading      boxes of the volume read for diagonal slices (1/8)
                                                                  -> vote_unit

The other half of the job's memory after the runtime is left for what the budget does
not count: the accumulator of an in-memory run, Zarr's buffers, the output writers,
the allocator's slack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..votes import accumulator_channels

#: Default budget (bytes) of a prediction.
DEFAULT_MEMORY_BUDGET = 512 * 2**20
#: What the runtime (Python, torch, libraries, the model) takes of a job's memory (MB).
RUNTIME_RESERVE_MB = 1024
#: The smallest budget a job's memory gives (MB).
MIN_JOB_BUDGET_MB = 64


@dataclass(frozen=True)
class MemoryBudget:
    """The parts of a prediction's memory budget, in bytes (see the module's figure).

    Attributes
    ----------
    total : int
        The whole budget.
    chunk_cache : int
        Cache of accumulator chunks (Zarr work folders only).
    activations : int
        Network activations of one batch (:class:`~.predictor.SlicePredictor`).
    groups : int
        Slice images and probabilities of one group of slices
        (:func:`~.predictor.max_group_units`).
    reading : int
        Boxes of the volume that diagonal slices are sampled from
        (:func:`~.predictor.vote_unit`).

    Examples
    --------
    >>> budget = MemoryBudget.in_memory(512 * 2**20)
    >>> budget.activations // 2**20, budget.groups // 2**20, budget.reading // 2**20
    (256, 192, 64)
    >>> MemoryBudget.job_budget_mb(4096)
    1536
    """

    total: int
    chunk_cache: int
    activations: int
    groups: int
    reading: int

    @property
    def working(self) -> int:
        """Activations, groups and reading together (the total less the chunk cache)."""
        return self.total - self.chunk_cache

    @classmethod
    def _split(cls, total: int, chunk_cache: int) -> MemoryBudget:
        working = total - chunk_cache
        return cls(total, chunk_cache, working // 2, working * 3 // 8, working // 8)

    @classmethod
    def in_memory(cls, total: int) -> MemoryBudget:
        """The budget of a run whose accumulator is in memory: no chunk cache."""
        return cls._split(int(total), 0)

    @classmethod
    def of(cls, budget: int | MemoryBudget) -> MemoryBudget:
        """``budget`` itself, or bytes as :meth:`in_memory`."""
        return budget if isinstance(budget, MemoryBudget) else cls.in_memory(budget)

    @classmethod
    def for_file_run(
        cls, total: int, shape: Sequence[int], chunks: Sequence[int], num_classes: int
    ) -> MemoryBudget:
        """The budget of a run into a Zarr work folder, with a chunk cache where it pays off.

        The cache pays off when it holds a layer of accumulator chunks across the volume
        (what a sweep along an axis keeps touching): then half the budget caches chunks
        and each is written about once per axis. When a layer does not fit,
        least-recently used caching would evict every chunk before its next use, so the
        whole budget goes to the working memory (larger groups, fewer rewrites).

        Examples
        --------
        >>> MemoryBudget.for_file_run(256 * 2**20, (256,) * 3, (64,) * 3, 4).chunk_cache // 2**20
        128
        """
        total = int(total)
        channel_bytes = 2 * (accumulator_channels(num_classes) + 1)
        voxels = int(np.prod(shape))
        layer = max(voxels // n * min(c, n) for n, c in zip(shape, chunks)) * channel_bytes
        cache = total - total // 2
        return cls._split(total, cache if layer <= cache else 0)

    @staticmethod
    def job_budget_mb(job_memory_mb: int) -> int:
        """The budget (MB) of a job with this much memory: half of what the runtime leaves."""
        return max((int(job_memory_mb) - RUNTIME_RESERVE_MB) // 2, MIN_JOB_BUDGET_MB)
