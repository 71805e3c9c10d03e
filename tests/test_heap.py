"""heap.release_freed_memory gives freed heap pages back to the operating system."""

from __future__ import annotations

import sys

import numpy as np
import psutil
import pytest

from warmfed_flwr.runtime.heap import release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_small_blocks_leave_the_resident_set_only_when_released():
    process = psutil.Process()
    blocks = [np.ones(2048, dtype=np.uint8) for _ in range(150_000)]  # ~0.3 GB of heap blocks, below mmap size
    keep = blocks[-1]  # one live block at the top of the heap: free() alone cannot shrink it
    grown = process.memory_info().rss
    del blocks
    after_free = process.memory_info().rss
    assert release_freed_memory()
    after_release = process.memory_info().rss
    assert grown - after_free < 100 * 2**20  # glibc kept the freed blocks
    assert after_free - after_release > 200 * 2**20  # and gave them back when asked
    assert keep.sum() == 2048
