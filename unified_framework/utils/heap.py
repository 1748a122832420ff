"""Keep freed memory in the process while a loop allocates the same buffers again and again.

A network's activations (and a group's slice buffers) are allocated and freed for every
batch. glibc hands blocks of 32 MiB and more (and, depending on how its heap happens to
be laid out, smaller ones) back to the kernel when they are freed, so the next batch
page-faults its whole working set in afresh. On the 2-core development VM a forward pass
of SUN's network took 1.4-2.1 times as long (more for larger slices) and a training
step 1.3 times as long (``python benchmarks/heap_reuse.py`` prints these figures);
in one-off probes, whole predictions ran up to 1.6 times slower in some processes than
in others, depending on the heap's layout. PyTorch's CPU allocator is plain ``malloc``; a preloaded jemalloc
or tcmalloc would also fix it, but needs the deployment to provide one.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator

# mallopt(3) parameters and glibc's ceilings for its dynamic thresholds (64-bit).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_CEILING = 32 * 2**20
_MMAP_MAX_DEFAULT = 65536
_INT_MAX = 2**31 - 1  # the largest value mallopt takes

_lock = threading.Lock()
_depth = 0  # nesting of reuse_freed_memory blocks; the C library's settings are per process


def _glibc():
    """The C library if it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (raises where the C library is not glibc)
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within the block, keep freed memory mapped for reuse.

    Inside, glibc serves every allocation from its heap and keeps freed memory mapped
    (up to 2 GiB at the heap's top), so repeated batches reuse pages that are already
    mapped. The process never holds more than the block's own peak: only memory that
    was in use is kept. On leaving the outermost block the kept memory is returned
    (``malloc_trim``) and glibc's thresholds are set to the ceiling its dynamic
    adjustment would reach anyway (blocks from 32 MiB up mapped on their own, heap
    trimmed beyond 64 MiB). Nested blocks keep the outer setting.

    Allocate what outlives the block (results, accumulators) before entering it, so
    that it is not placed on the heap among the reused buffers.

    Yields
    ------
    bool
        Whether the setting took effect (False where the C library is not glibc).
    """
    global _depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
                libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_CEILING)
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_CEILING)
                libc.malloc_trim(0)
