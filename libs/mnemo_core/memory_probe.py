"""A debug switch that shows where a process's memory goes over time (off unless asked for).

`MNEMO_MEMORY_PROBE=<seconds>` makes a service append one JSON line every <seconds> to
`<dir>/<service>-<pid>.jsonl` (`MNEMO_MEMORY_PROBE_DIR`, else `$MNEMO_HOME/memory-probe`): its RSS (anonymous
and file-backed), the glibc heap (bytes handed out, free bytes kept by the allocator, mmapped blocks), SQLite's
own allocations (page caches, statements), and the Python objects the garbage collector tracks by type. With
`MNEMO_TRACEMALLOC=<frames>` too, the Python heap is traced (from the first tick on) and a tracemalloc snapshot is written next to each
line (`<service>-<pid>-<n>.tracemalloc`), to diff two of them by allocating line (`bench/soak.py --probe`).

The parts tell RSS growth apart: growth of the Python heap with a line to blame (a leak, or a cache filling),
SQLite's page caches filling as the databases grow (bounded by `cache_size` per connection), or free bytes
the allocator keeps (fragmentation: in use flat, RSS up).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

PROBE_ENV = "MNEMO_MEMORY_PROBE"
PROBE_DIR_ENV = "MNEMO_MEMORY_PROBE_DIR"
TRACEMALLOC_ENV = "MNEMO_TRACEMALLOC"
TOP_TYPES = 60


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    with contextlib.suppress(OSError):
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return None


def malloc_heap() -> dict[str, int]:
    """glibc's view of its heap: bytes in use, free bytes it keeps, bytes in mmapped blocks ({} elsewhere)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {"in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd, "arena": info.arena}


def sqlite_memory() -> int | None:
    """Bytes SQLite has allocated in this process (all connections), or None when it cannot be asked."""
    try:
        import _sqlite3

        library = ctypes.CDLL(_sqlite3.__file__)
        current, highwater = ctypes.c_int64(), ctypes.c_int64()
        if library.sqlite3_status64(0, ctypes.byref(current), ctypes.byref(highwater), 0) != 0:
            return None
    except (ImportError, OSError, AttributeError):
        return None
    return int(current.value)


def rss() -> dict[str, int]:
    """Resident set in bytes, whole and split (RssAnon, RssFile) from /proc/self/status."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                found[key] = int(value.split()[0]) * 1024
    return found


def sample(started: float) -> dict[str, Any]:
    """One line of the probe."""
    line: dict[str, Any] = {"t": round(time.monotonic() - started, 1), "wall": time.time(), "rss": rss()}
    line["malloc"] = malloc_heap()
    line["sqlite"] = sqlite_memory()
    if tracemalloc.is_tracing():
        line["traced"] = tracemalloc.get_traced_memory()[0]
    objects = gc.get_objects()
    line["gc_objects"] = len(objects)
    line["types"] = dict(Counter(type(o).__name__ for o in objects).most_common(TOP_TYPES))
    del objects
    return line


def _probe(service: str, every: float, directory: Path, frames: int) -> None:
    started = time.monotonic()
    stem = f"{service}-{os.getpid()}"
    n = 0
    while True:
        time.sleep(every)
        if frames and not tracemalloc.is_tracing():
            # From the first tick on: tracing the imports would slow the start past the mesh's ready timeout.
            tracemalloc.start(frames)
            continue
        line = sample(started)
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            snapshot.dump(str(directory / f"{stem}-{n:04d}.tracemalloc"))
            line["snapshot"] = n
        with (directory / f"{stem}.jsonl").open("a") as out:
            out.write(json.dumps(line) + "\n")
        n += 1


def start_memory_probe(service: str) -> None:
    """Starts the probe thread when MNEMO_MEMORY_PROBE asks for it; does nothing otherwise."""
    every = os.environ.get(PROBE_ENV, "")
    if not every:
        return
    frames = int(os.environ.get(TRACEMALLOC_ENV) or 0)
    home = Path(os.environ.get("MNEMO_HOME") or "~/.mnemo").expanduser()
    directory = Path(os.environ.get(PROBE_DIR_ENV) or home / "memory-probe")
    directory.mkdir(parents=True, exist_ok=True)
    threading.Thread(
        target=_probe, args=(service, float(every), directory, frames), name="memory-probe", daemon=True
    ).start()
