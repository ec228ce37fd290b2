"""Hand freed heap memory back to the operating system between batches.

Normalising a slice builds many short-lived objects (payload texts, JSON dicts, row lists)
that live in glibc's heap; once freed, glibc keeps those pages for reuse and returns only
the top of the heap. Survivors scattered through it (Arrow wrappers, cache entries, DuckDB's
own allocations) pin the rest, so RSS climbed ~2.5 MB per BigCommerce day partition until
a merge, although Python held under 1 MB more (tracemalloc). `malloc_trim(0)` releases the
free pages in every arena (glibc >= 2.8 with MADV_DONTNEED): loading 200k orders alone
peaked at 579 MB without it and 414 MB with it, in the same wall time (docs/performance.md).
Elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the libc this process already runs on
    except (OSError, AttributeError):  # no malloc_trim (musl)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS; True if the allocator supports it."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
