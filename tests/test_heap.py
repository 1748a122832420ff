"""reuse_freed_memory: freed buffers stay mapped inside the block and go back after it.

Observed through the kernel's own counters (minor page faults, RSS), not timings.
"""

import resource

import numpy as np
import psutil
import pytest

from unified_framework.utils.heap import _glibc, reuse_freed_memory

pytestmark = pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")

BLOCK = 96 * 2**20  # above glibc's 32 MiB mapping ceiling: by default mapped and unmapped each time


def _faults_of_repeated_buffers(times: int = 8) -> int:
    """Minor page faults of allocating, filling and freeing a large buffer ``times`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        buffer = np.empty(BLOCK, np.uint8)
        buffer.fill(1)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_buffers_are_reused_inside_the_block():
    outside = _faults_of_repeated_buffers()
    with reuse_freed_memory() as active:
        assert active
        _faults_of_repeated_buffers(1)  # the first allocation maps the pages
        inside = _faults_of_repeated_buffers()
    assert outside >= 8 * BLOCK // (
        2 * 2**20
    )  # every round faults its pages in afresh (at least once per 2 MiB huge page)
    assert inside < outside / 8


def test_nested_blocks_keep_the_outer_setting():
    with reuse_freed_memory():
        _faults_of_repeated_buffers(1)
        with reuse_freed_memory():
            pass
        after_inner = _faults_of_repeated_buffers()
    assert after_inner < _faults_of_repeated_buffers() / 8


def test_kept_memory_is_returned_after_the_block():
    process = psutil.Process()
    with reuse_freed_memory():
        buffer = np.ones(2 * BLOCK, np.uint8)
        del buffer
        kept = process.memory_info().rss
    returned = process.memory_info().rss
    assert kept - returned > BLOCK  # the freed 192 MiB stayed mapped inside, and went on leaving
