"""Soak: many clients for minutes on one `mnemo server`; errors, each process's memory, and p99 over time.

50 clients mix agent turns, archival inserts and searches, tool runs and file uploads against the whole mesh
(SQLite, local embeddings, the fake provider answering at once) for ten minutes. Every few seconds each
process's RSS and the p99 latency of the operations that finished since are sampled. Afterwards: the error
count (must be 0), each process's RSS growth after warm-up (last minute against the first minute after it,
must stay under 10 %), and the p99 of the first and second half after warm-up. The samples are written to
docs/soak/soak.json and plotted to docs/soak/soak.png.

    python -m bench.soak                               # the full form (`make soak`): 50 clients, 600 s
    python -m bench.soak --clients 10 --duration 60    # a quick look
    python -m bench.soak --probe 15 --tracemalloc 10   # and where each process's memory went (slower)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.chaos import SERVICES, Server, fake_provider, mnemo_server
from bench.memory_probe import report

OUT = Path(__file__).resolve().parent.parent / "docs" / "soak"
# Operations and their share of the mix.
MIX = {"turn": 0.45, "archival_insert": 0.15, "archival_search": 0.15, "tool_run": 0.15, "upload": 0.10}
SAMPLE_EVERY = 5.0
# Tokens of each agent's window. The system prompt, tool schemas and the (nearly full) block take about
# 1,100 of them and each turn adds ~25, so the window is summarized every few turns from the eighth on:
# each agent's window, and what the services keep of it, reaches its steady size within the warm-up.
# (With 6,000, the first summary came after ~170 turns, later than the end of the soak: the windows, and
# the agent service's cache of them, grew all along.)
CONTEXT_WINDOW = 1500
# The block starts nearly full, so that it is full within the warm-up (later appends are refused).
BLOCK_LIMIT = 1000
BLOCK_START = ("The user runs soak tests. " * 40)[:900]
RSS_GROWTH_LIMIT = 0.10
TOOL = '''
def word_count(text: str) -> int:
    """Counts the words of a text.

    Args:
        text: The text.
    """
    return len(text.split())
'''


@dataclass
class Soak:
    """What the clients did and what the sampler saw."""

    started: float = field(default_factory=time.monotonic)
    latencies: list[tuple[float, str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


async def operation(
    client: httpx.AsyncClient, op: str, agent_id: str, tool_id: str, source_id: str, n: int
) -> None:
    """One operation of the mix; raises on any failure."""
    if op == "turn":
        text = f"soak {n}" if n % 4 else f"soak {n} #remember fact {n}"
        response = await client.post(
            f"/v1/agents/{agent_id}/messages", json={"messages": [{"content": text}]}
        )
    elif op == "archival_insert":
        response = await client.post(
            f"/v1/agents/{agent_id}/archival-memory", json={"text": f"note {n}: the soak wrote this passage"}
        )
    elif op == "archival_search":
        response = await client.get(
            f"/v1/agents/{agent_id}/archival-memory/search", params={"query": f"note {n % 50}", "top_k": 5}
        )
    elif op == "tool_run":
        response = await client.post(
            f"/v1/tools/{tool_id}/run",
            json={"arguments": {"text": f"one two three {n}"}, "agent_id": agent_id},
        )
        if response.status_code == 200 and response.json()["status"] != "success":
            raise RuntimeError(f"tool run: {response.text[:200]}")
    else:
        response = await client.post(
            f"/v1/sources/{source_id}/upload",
            files={
                "file": (
                    f"notes-{n}.txt",
                    f"Upload {n}.\n\nA short file the soak uploads.\n".encode(),
                    "text/plain",
                )
            },
        )
    if response.status_code >= 300:
        raise RuntimeError(f"{op}: {response.status_code} {response.text[:200]}")


async def client_loop(
    server: Server, index: int, ids: tuple[str, str, str], until: float, soak: Soak, rng: random.Random
) -> None:
    agent_id, tool_id, source_id = ids
    ops, weights = list(MIX), list(MIX.values())
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=120) as client:
        n = 0
        while time.monotonic() < until:
            op = rng.choices(ops, weights)[0]
            started = time.monotonic()
            try:
                await operation(client, op, agent_id, tool_id, source_id, index * 100_000 + n)
            except (httpx.HTTPError, RuntimeError) as exc:
                soak.errors.append(f"{time.monotonic() - soak.started:.0f}s {op}: {exc!r}"[:300])
            else:
                soak.latencies.append((time.monotonic(), op, time.monotonic() - started))
                soak.counts[op] = soak.counts.get(op, 0) + 1
            n += 1
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # a user's pause


def rss_by_process(server: Server) -> dict[str, float]:
    """RSS in MB of each service and of the supervisor."""
    found = {"supervisor": psutil.Process(server.process.pid).memory_info().rss / 2**20}
    for service in SERVICES:
        pid = server.pid_of(service)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                found[service] = psutil.Process(pid).memory_info().rss / 2**20
    return found


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def sampler(server: Server, until: float, soak: Soak) -> None:
    last = time.monotonic()
    while time.monotonic() < until:
        await asyncio.sleep(SAMPLE_EVERY)
        now = time.monotonic()
        window = [lat for t, _, lat in soak.latencies if last <= t < now]
        last = now
        soak.samples.append(
            {
                "t": round(now - soak.started, 1),
                "rss_mb": {
                    k: round(v, 1) for k, v in (await asyncio.to_thread(rss_by_process, server)).items()
                },
                "p99_s": round(p99(window), 4),
                "ops": len(window),
            }
        )


async def setup(server: Server, clients: int) -> list[tuple[str, str, str]]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60) as client:
        tool = await client.post("/v1/tools", json={"source_code": TOOL})
        tool.raise_for_status()
        source = await client.post("/v1/sources", json={"name": "soak"})
        source.raise_for_status()
        ids = []
        for i in range(clients):
            agent = await client.post(
                "/v1/agents",
                # A steady state, as long-lived agents reach one: a window that summaries keep small, and a
                # block that is full, so that what grows is only the stored history and passages.
                json={
                    "name": f"soak-{i}",
                    "model": "openai/soak",
                    "context_window": CONTEXT_WINDOW,
                    "memory_blocks": [{"label": "human", "value": BLOCK_START, "limit": BLOCK_LIMIT}],
                },
            )
            agent.raise_for_status()
            ids.append((agent.json()["id"], tool.json()["id"], source.json()["id"]))
        return ids


def judge(soak: Soak, warmup: float) -> tuple[bool, list[str]]:
    """The verdict and its lines: errors, RSS growth per process, p99 of the two halves after warm-up."""
    lines = []
    ok = not soak.errors
    lines.append(
        f"  operations   {sum(soak.counts.values())} ({', '.join(f'{k} {v}' for k, v in sorted(soak.counts.items()))})"
    )
    lines.append(f"  errors       {len(soak.errors)}")
    lines.extend(f"    - {error}" for error in soak.errors[:20])
    after = [s for s in soak.samples if s["t"] >= warmup]
    if len(after) < 4:
        return False, [*lines, "  too few samples after warm-up"]
    span = max(SAMPLE_EVERY, min(60.0, (after[-1]["t"] - after[0]["t"]) / 4))
    first = [s for s in after if s["t"] <= after[0]["t"] + span]
    last = [s for s in after if s["t"] >= after[-1]["t"] - span]
    for name in sorted(after[-1]["rss_mb"]):
        start = sorted(s["rss_mb"].get(name, 0.0) for s in first)[len(first) // 2]
        end = sorted(s["rss_mb"].get(name, 0.0) for s in last)[len(last) // 2]
        growth = (end - start) / start if start else 0.0
        ok = ok and growth < RSS_GROWTH_LIMIT
        lines.append(f"  rss {name:<10} {start:7.1f} -> {end:7.1f} MB ({growth:+.1%})")
    mid = after[0]["t"] + (after[-1]["t"] - after[0]["t"]) / 2
    halves = [
        [lat for t, _, lat in soak.latencies if warmup <= t - soak.started < mid],
        [lat for t, _, lat in soak.latencies if t - soak.started >= mid],
    ]
    lines.append(f"  p99          {p99(halves[0]):.3f} s then {p99(halves[1]):.3f} s (halves after warm-up)")
    both = sorted(halves[0] + halves[1])
    lines.append(f"  p50          {both[len(both) // 2] if both else 0.0:.3f} s (after warm-up)")
    return ok, lines


def plot(soak: Soak, warmup: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s["t"] for s in soak.samples]
    figure, (rss, latency) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name in sorted({k for s in soak.samples for k in s["rss_mb"]}):
        rss.plot(times, [s["rss_mb"].get(name) for s in soak.samples], label=name)
    rss.set_ylabel("RSS (MB)")
    rss.legend(loc="upper left", fontsize="small", ncol=3)
    rss.axvline(warmup, color="grey", linestyle=":")
    latency.plot(times, [s["p99_s"] * 1000 for s in soak.samples], color="black")
    latency.set_ylabel(f"p99 per {SAMPLE_EVERY:g} s (ms)")
    latency.set_xlabel("seconds")
    latency.axvline(warmup, color="grey", linestyle=":")
    figure.suptitle(f"mnemo soak: {sum(soak.counts.values())} operations, {len(soak.errors)} errors")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


async def soak_run(server: Server, args: argparse.Namespace) -> Soak:
    ids = await setup(server, args.clients)
    soak = Soak()
    until = soak.started + args.duration
    rng = random.Random(args.seed)
    await asyncio.gather(
        sampler(server, until, soak),
        *(
            client_loop(server, i, ids[i], until, soak, random.Random(rng.random()))
            for i in range(args.clients)
        ),
    )
    return soak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds (default: a fifth of the duration)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--probe",
        type=float,
        default=0.0,
        help="seconds between each process's memory probe lines (MNEMO_MEMORY_PROBE; off by default)",
    )
    parser.add_argument(
        "--tracemalloc", type=int, default=0, help="with --probe: trace the Python heap, this many frames"
    )
    parser.add_argument("--probe-dir", type=Path, help="where the probe writes (default: a temporary one)")
    args = parser.parse_args()
    warmup = args.warmup or args.duration / 5
    # The rate limits are off: 50 clients on one key pass the per-key rate (50 a second) whenever the
    # machine is fast, and the soak is about the mesh holding, not about the limits (tested on their own).
    extra = {"MNEMO_LOG_LEVEL": "ERROR", "MNEMO_RATE_LIMIT_PER_KEY": "0", "MNEMO_RATE_LIMIT_PER_ORG": "0"}
    with tempfile.TemporaryDirectory(prefix="mnemo-soak-") as home:
        probe_dir = args.probe_dir or Path(home) / "memory-probe"
        if args.probe:
            extra |= {"MNEMO_MEMORY_PROBE": str(args.probe), "MNEMO_MEMORY_PROBE_DIR": str(probe_dir)}
            if args.tracemalloc:
                extra["MNEMO_TRACEMALLOC"] = str(args.tracemalloc)
        with fake_provider() as fake, mnemo_server(Path(home), fake.base_url, extra) as server:
            fake.inject_faults(conversing=True)
            soak = asyncio.run(soak_run(server, args))
            alive = server.process.poll() is None
        probed = (
            report(probe_dir, time.time() - time.monotonic() + soak.started + warmup) if args.probe else []
        )
    ok, lines = judge(soak, warmup)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(
        json.dumps(
            {
                "clients": args.clients,
                "duration_s": args.duration,
                "warmup_s": warmup,
                "errors": len(soak.errors),
                "operations": soak.counts,
                "samples": soak.samples,
            },
            indent=1,
        )
    )
    plot(soak, warmup, args.out / "soak.png")
    print(f"soak: {args.clients} clients, {args.duration:.0f} s (warm-up {warmup:.0f} s)")
    print("\n".join(lines))
    print(f"  plot         {args.out / 'soak.png'}")
    if probed:
        print("memory probe (first sample after warm-up -> last):")
        print("\n".join(probed))
    if not alive:
        print("  mnemo server exited during the soak")
        ok = False
    print("PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
