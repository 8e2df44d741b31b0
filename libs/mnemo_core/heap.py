"""Gives the allocator's free memory back to the system now and then (glibc `malloc_trim`).

A service's threads (gRPC's, the database workers, the embedding pool) allocate in several glibc arenas;
what a burst of work frees stays mapped in them, counted in the process's RSS though nothing uses it, and a
later burst does not always fit in the holes. Measured in a soak (docs/adr/0520): the agent and llm
services' free-but-kept heap grew by megabytes an hour while the bytes in use stayed flat. `malloc_trim(0)`
returns every whole free page of every arena (madvise), which takes milliseconds on these heaps, so a
thread does it once a minute. Each service also caps its arenas (mallopt M_ARENA_MAX, 2 by default; glibc
allows 8 per core), which keeps the holes few: its threads mostly wait on I/O or hold the GIL, so they
hardly contend for an arena. Both are settings (`malloc_trim_seconds`, `malloc_arenas`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from typing import Any

_M_ARENA_MAX = -8


def _libc() -> Any:
    with contextlib.suppress(OSError):
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return None


def _malloc_trim() -> Any:
    """libc's malloc_trim, or None where there is none (musl, macOS)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def limit_arenas(arenas: int) -> bool:
    """Caps glibc's malloc arenas for threads that have none yet (0: glibc's default); False if it cannot."""
    mallopt = getattr(_libc(), "mallopt", None)
    if arenas <= 0 or mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def trim_heap() -> bool:
    """Returns the allocator's whole free pages to the system; False when this libc cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def tend_heap(*, arenas: int, trim_every: float) -> threading.Event | None:
    """Caps the arenas, then trims the heap every `trim_every` seconds on a daemon thread (0: never).

    Call first thing in a service process, before its threads start. Set the returned event to stop.
    """
    limit_arenas(arenas)
    trim = _malloc_trim()
    if trim_every <= 0 or trim is None:
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(trim_every):
            trim(0)

    threading.Thread(target=run, name="heap-trim", daemon=True).start()
    return stop
