"""Reads what `MNEMO_MEMORY_PROBE` wrote (libs/mnemo_core/memory_probe.py) and says where memory grew.

For each process: RSS, the glibc heap in use and the free bytes it keeps, SQLite's allocations, the traced
Python heap and the GC-tracked objects, from the first line after `since` (a wall-clock time) to the last;
the object types that grew most; and, when tracemalloc snapshots were written, the allocating tracebacks
that grew most between the same two points.

    python -m bench.memory_probe DIR [--since UNIX_TIME] [--top 12]
"""

from __future__ import annotations

import argparse
import json
import tracemalloc
from pathlib import Path
from typing import Any

MB = 2**20


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mb(value: float | None) -> str:
    return "     n/a" if value is None else f"{value / MB:8.1f}"


def _row(label: str, before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return f"    {label:<16}{_mb(before)} -> {_mb(after)} MB"
    return f"    {label:<16}{_mb(before)} -> {_mb(after)} MB ({(after - before) / MB:+7.1f} MB)"


def _frames(traceback: tracemalloc.Traceback, keep: int) -> str:
    """The innermost frame and the innermost frames of mnemo's own code, most recent first."""
    frames = list(reversed(traceback))  # most recent first
    shown = [frames[0]]
    shown.extend(f for f in frames[1:] if "mnemo" in f.filename and "site-packages" not in f.filename)
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in shown[:keep])


def report(directory: Path, since: float = 0.0, top: int = 12) -> list[str]:
    """Lines describing each probed process's growth from the first sample at or after `since` to the last."""
    out: list[str] = []
    for path in sorted(directory.glob("*.jsonl")):
        lines = _lines(path)
        after = [line for line in lines if line["wall"] >= since] or lines[-1:]
        if len(after) < 2:
            continue
        first, last = after[0], after[-1]
        out.append(f"  {path.stem}: {first['t']:.0f} s -> {last['t']:.0f} s of its life")
        out.append(_row("rss", first["rss"].get("VmRSS"), last["rss"].get("VmRSS")))
        out.append(_row("  anonymous", first["rss"].get("RssAnon"), last["rss"].get("RssAnon")))
        out.append(_row("malloc in use", first["malloc"].get("in_use"), last["malloc"].get("in_use")))
        out.append(_row("malloc free", first["malloc"].get("free"), last["malloc"].get("free")))
        out.append(_row("malloc mmapped", first["malloc"].get("mmapped"), last["malloc"].get("mmapped")))
        out.append(_row("sqlite", first.get("sqlite"), last.get("sqlite")))
        out.append(_row("python traced", first.get("traced"), last.get("traced")))
        out.append(f"    gc objects      {first['gc_objects']:8d} -> {last['gc_objects']:8d}")
        grown = sorted(((n - first["types"].get(t, 0), t) for t, n in last["types"].items()), reverse=True)[
            :6
        ]
        out.append("    types grown     " + ", ".join(f"{t} {d:+d}" for d, t in grown if d > 0))
        if "snapshot" in first and "snapshot" in last:
            stem = path.stem
            old = tracemalloc.Snapshot.load(str(directory / f"{stem}-{first['snapshot']:04d}.tracemalloc"))
            new = tracemalloc.Snapshot.load(str(directory / f"{stem}-{last['snapshot']:04d}.tracemalloc"))
            out.append("    python heap grown by (innermost frame <- mnemo's frames):")
            for diff in new.compare_to(old, "traceback")[:top]:
                out.append(
                    f"      {diff.size_diff / 1024:+9.0f} KiB {diff.count_diff:+7d} blocks  "
                    f"{_frames(diff.traceback, 4)}"
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--since", type=float, default=0.0)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    print("\n".join(report(args.directory, args.since, args.top)))


if __name__ == "__main__":
    main()
