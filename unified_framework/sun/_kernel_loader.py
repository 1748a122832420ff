"""The compiled numba kernels (:mod:`._vote_kernels`), loaded on first use.

numba takes seconds to import, so the kernels module is imported when a kernel is
first needed, not with the package. Each call sets numba's threads to as many as torch
uses, within the CPUs this process may run on (a SLURM job's allocation, not the
whole node).
"""

from __future__ import annotations

import os
from types import ModuleType


def kernels() -> ModuleType:
    """The kernels module, with numba's thread count set for the next kernel call.

    Examples
    --------
    >>> kernels().__name__
    'unified_framework.sun._vote_kernels'
    """
    import numba
    import torch

    from . import _vote_kernels

    usable = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    numba.set_num_threads(
        max(1, min(usable, torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]  # set at import, not in the stubs
    )
    return _vote_kernels
