"""The allocator's free memory goes back to the system (glibc)."""

from __future__ import annotations

import ctypes
import platform

import pytest

from mnemo_core import heap
from mnemo_core.memory_probe import malloc_heap, rss

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def test_trimming_returns_the_free_pages_a_burst_left_behind() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # A burst of blocks (below the mmap threshold, so in the heap), written to so they are resident, each
    # followed by a small one that outlives it: freeing the burst leaves 25 MB of holes between live
    # blocks, which free() alone cannot give back (it only shrinks the heap from its top).
    blocks, pins = [], []
    for _ in range(400):
        blocks.append(libc.malloc(64 * 1024))
        pins.append(libc.malloc(8 * 1024))
        ctypes.memset(blocks[-1], 1, 64 * 1024)
    for block in blocks:
        libc.free(block)
    assert malloc_heap()["free"] >= 20 * 2**20
    resident = _rss_anon()

    assert heap.trim_heap()

    assert _rss_anon() < resident - 10 * 2**20
    for pin in pins:
        libc.free(pin)


def test_tending_without_trims_starts_no_thread_and_caps_the_arenas() -> None:
    assert heap.tend_heap(arenas=2, trim_every=0) is None
    assert heap.limit_arenas(2)
    assert not heap.limit_arenas(0)


def _rss_anon() -> int:
    return rss()["RssAnon"]
