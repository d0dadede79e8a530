"""Giving freed memory back to the system between the trainer's phases (glibc's allocator; a no-op elsewhere).

A window's held columns are tens of MB each, and numpy's temporaries over them (sorts, uniques, float copies)
are as large. glibc serves an allocation under its mmap threshold from the heap, and raises that threshold to
the size of every mapped block freed, up to 32 MiB: so past a few weeks the temporaries land in the heap, which
keeps their pages once they are freed, and the process's peak grew with the window beyond what it holds.
A fixed threshold maps every large block (given back on free), and a trim after each phase returns the heap's
free pages (``malloc_trim`` also releases those inside the heap).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h); setting it turns off the dynamic threshold
MMAP_THRESHOLD = 1 << 20  # blocks of 1 MiB and more are mapped (numpy's large arrays; a batch's tensors stay below)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def map_large_blocks() -> bool:
    """Fixes the mmap threshold at ``MMAP_THRESHOLD``; returns whether the allocator took it (glibc only)."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Collects unreachable Python objects (an epoch's spent iterators), then returns the allocator's free pages
    to the system; whether any were (glibc only)."""
    gc.collect()
    libc = _libc()
    return bool(libc and libc.malloc_trim(0))
