"""`release_free_heap` gives the pages of freed objects back to the OS, even when a few
survivors are scattered among them (what the loader sees after normalising a slice)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from aiq_sync.heap import release_free_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None).gnu_get_libc_version is not None
    except AttributeError:
        return False


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's")
def test_freed_objects_pages_go_back_to_the_os_despite_scattered_survivors() -> None:
    # 1 KiB objects come from glibc's heap (pymalloc takes only up to 512 bytes).
    blocks = [bytes(1024) + i.to_bytes(4, "little") for i in range(200_000)]  # ~200 MB
    survivors = blocks[::64]  # one in 64 stays alive: the heap cannot shrink from its top
    del blocks
    before = _rss_mb()
    assert release_free_heap() is True
    after = _rss_mb()
    assert len(survivors) == 3125
    # ~196 MB were freed; glibc kept them mapped until the trim.
    assert before - after > 100, f"RSS {before:.0f} MB -> {after:.0f} MB"
