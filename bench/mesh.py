"""Mesh benchmark: startup, memory, agent create, send-message latency and throughput, streaming.

The whole mesh runs as `mnemo server` (real processes on SQLite), against the fake
OpenAI-compatible provider with zero latency (its own process), driven over REST like a user
would. Prints a table.

Memory is read from /proc/<pid>/smaps_rollup: PSS (each shared page divided among the processes
mapping it, so the services' PSS add up to what the mesh really costs) and RSS, per service and
for the supervisor, when the mesh is idle right after start and again idle after the load.

    make bench                      # full run
    make bench BENCH_ARGS=--quick   # a shorter run
    make bench BENCH_ARGS=--footprint   # start-up, idle memory and agent create only (~30 s)
    python -m bench.mesh --quick --backends sqlite,postgres   # the same on SQLite and on Postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psutil

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo_core.actor import ORG_KEY, USER_KEY
from mnemo_core.lifecycle import PARENT_PID_ENV
from tests.fakes.llm_provider import RemoteFake, free_port
from tests.harness import API_KEY, mesh_env
from tests.postgres import embedded_postgres

# (name, target, unit, lower is better)
SERVICES = ("gateway", "agent", "memory", "llm", "tools")
MEMORY_STATES = ("idle at start", "idle after load", "idle after keep-alive")
# The local embedding model leaves memory after this many seconds without a request (300 by default; short
# here so that the third memory state is reached within the run).
EMBEDDING_KEEP_ALIVE = 5.0

TARGETS = {
    "ready (cold, fresh data dir)": (2.0, "s", True),
    "ready (warm restart)": (1.5, "s", True),
    "ready (make run, warm)": (1.5, "s", True),
    "CPU until ready (warm restart)": (None, "s", True),
    **{
        name: target
        for state in MEMORY_STATES
        for name, target in (
            (f"PSS {state}, 5 services", (300.0, "MB", True)),
            (f"RSS {state}, 5 services", (None, "MB", True)),
            (f"PSS {state}, with supervisor", (None, "MB", True)),
            *((f"  RSS/PSS {state}: {s}", (None, "MB", True)) for s in (*SERVICES, "supervisor")),
        )
    },
    "agent create p50": (5.0, "ms", True),
    "server CPU per agent create": (None, "ms", True),
    "agent create p99": (None, "ms", True),
    "send message p50 (1 client)": (15.0, "ms", True),
    "send message p99 (1 client)": (30.0, "ms", True),
    "throughput (16 clients)": (100.0, "msg/s", False),
    "server CPU per message": (10.0, "ms", True),
    "  CPU/msg: gateway": (None, "ms", True),
    "  CPU/msg: agent": (None, "ms", True),
    "  CPU/msg: memory": (None, "ms", True),
    "  CPU/msg: llm": (None, "ms", True),
    "  CPU/msg: tools": (None, "ms", True),
    "stream 1st event after token p50": (10.0, "ms", True),
    "stream 1st event after token p99": (None, "ms", True),
    "gRPC GetAgent p50, agent port": (None, "ms", True),
    "gRPC GetAgent p50, front": (None, "ms", True),
    "grpc front overhead p50": (None, "ms", True),
}


@dataclass
class Figures:
    values: dict[str, float]

    def print(self) -> None:
        print(f"\n{'measure':<40} {'mnemo':>10} {'target':>10}  unit")
        for name, (target, unit, lower) in TARGETS.items():
            if name not in self.values:
                continue
            value = self.values[name]
            if name.startswith("  RSS/PSS"):
                rss, pss = value, self.values[name.replace("RSS/PSS", "PSS", 1)]
                print(f"{name:<40} {f'{rss:.0f}/{pss:.0f}':>10} {'':>10}  {unit}")
                continue
            mark = ""
            if target is not None:
                mark = "ok" if (value <= target if lower else value >= target) else "MISSED"
            shown_target = "" if target is None else f"{'<=' if lower else '>='}{target:g}"
            print(f"{name:<40} {value:>10.1f} {shown_target:>10}  {unit} {mark}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def agent_body(i: int) -> dict[str, object]:
    return {
        "name": f"bench-{i}",
        "model": "openai/fake",
        "memory_blocks": [
            {"label": "persona", "value": "I am a benchmark agent."},
            {"label": "human", "value": "The user runs benchmarks."},
        ],
    }


@dataclass
class Server:
    """A running `mnemo server` and where it listens."""

    process: subprocess.Popen[str]
    http_url: str

    ports: dict[str, int]

    def named_services(self) -> dict[str, psutil.Process]:
        """The service processes by name, told apart by the port each listens on."""
        by_port = {port: name for name, port in self.ports.items()}
        named = {}
        for child in psutil.Process(self.process.pid).children():
            for connection in child.net_connections("tcp"):
                if connection.status == psutil.CONN_LISTEN and connection.laddr.port in by_port:
                    named[by_port[connection.laddr.port]] = child
        return dict(sorted(named.items()))

    def cpu_seconds(self) -> float:
        """User and system CPU the supervisor and the services have used so far."""
        supervisor = psutil.Process(self.process.pid)
        return sum(sum(p.cpu_times()[:2]) for p in [supervisor, *supervisor.children()])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def smaps_rollup(pid: int) -> dict[str, float]:
    """A process's memory totals from /proc/<pid>/smaps_rollup, in MB (Rss, Pss, Pss_Anon, ...)."""
    totals = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        totals[key] = int(rest.split()[0]) / 1024
    return totals


def record_memory(server: Server, state: str, values: dict[str, float]) -> None:
    """PSS and RSS of each service and of the supervisor, and their totals, under `state`."""
    pids = {name: process.pid for name, process in server.named_services().items()}
    pids["supervisor"] = server.process.pid
    rss = pss = 0.0
    for name, pid in pids.items():
        rollup = smaps_rollup(pid)
        values[f"  RSS/PSS {state}: {name}"] = rollup["Rss"]
        values[f"  PSS {state}: {name}"] = rollup["Pss"]
        if name != "supervisor":
            rss, pss = rss + rollup["Rss"], pss + rollup["Pss"]
    values[f"PSS {state}, 5 services"] = pss
    values[f"RSS {state}, 5 services"] = rss
    values[f"PSS {state}, with supervisor"] = pss + values[f"  PSS {state}: supervisor"]


async def settle_idle(server: Server, quiet_for: float = 1.0, longest: float = 15.0) -> None:
    """Waits until the mesh's processes have used no CPU for `quiet_for` seconds (at most `longest`)."""
    processes = [psutil.Process(server.process.pid), *server.named_services().values()]
    deadline = time.perf_counter() + longest
    last = sum(sum(p.cpu_times()[:2]) for p in processes)
    while time.perf_counter() < deadline:
        await asyncio.sleep(quiet_for)
        now = sum(sum(p.cpu_times()[:2]) for p in processes)
        if now - last < 0.01:
            return
        last = now


def ready_via_make_run(env: dict[str, str]) -> float:
    """Seconds from `make run` (an installed tree) to the ready banner; then stops the mesh."""
    # `make` stands between this process and `mnemo server`: the mesh is stopped through its process group.
    env = {k: v for k, v in env.items() if k != PARENT_PID_ENV}
    started = time.perf_counter()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(Path(__file__).resolve().parents[1]), "run"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.startswith("Press Ctrl-C"):
                return time.perf_counter() - started
        raise RuntimeError(f"make run exited with {process.wait()}")
    finally:
        # `mnemo server` stops its services on SIGTERM; make goes with the rest of the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def start_server(env: dict[str, str]) -> tuple[float, Server]:
    """Starts `mnemo server`; returns the seconds until it printed its ready banner."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mnemo.cli", "server"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Press Ctrl-C"):
            ports = {
                name: int(env[f"MNEMO_{name.upper()}_PORT"]) for name in ("agent", "memory", "tools", "llm")
            }
            ports["gateway"] = int(env["MNEMO_HTTP_PORT"])
            url = f"http://127.0.0.1:{env['MNEMO_HTTP_PORT']}"
            return time.perf_counter() - started, Server(process, url, ports)
    raise RuntimeError(f"mnemo server exited with {process.wait()}")


async def measure(args: argparse.Namespace, database_url: str = "") -> Figures:
    values: dict[str, float] = {}
    provider_port = free_port()
    provider = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [sys.executable, "-m", "tests.fakes.llm_provider", "--port", str(provider_port), "--no-record"]
    )
    try:
        await _wait_http(f"http://127.0.0.1:{provider_port}/_fake/requests")
        with tempfile.TemporaryDirectory() as home:
            # The rate limits stay on (their cost is part of a turn's) but far above what the bench asks:
            # the defaults (ADR 0412) would cap one key at 50 calls a second.
            extra = {
                "MNEMO_RATE_LIMIT_PER_KEY": "1000000",
                "MNEMO_RATE_LIMIT_PER_ORG": "1000000",
                "MNEMO_EMBEDDING_KEEP_ALIVE_SECONDS": str(EMBEDDING_KEEP_ALIVE),
            }
            if database_url:
                extra["MNEMO_DATABASE_URL"] = database_url
            env = mesh_env(Path(home), provider_url=f"http://127.0.0.1:{provider_port}/v1", extra=extra)
            values["ready (cold, fresh data dir)"], server = start_server(env)
            server.stop()
            values["ready (make run, warm)"] = ready_via_make_run(env)
            values["ready (warm restart)"], server = start_server(env)
            values["CPU until ready (warm restart)"] = server.cpu_seconds()
            try:
                await settle_idle(server)
                record_memory(server, MEMORY_STATES[0], values)
                await _load(server, args, values)
                if not args.footprint:
                    await _stream(server, RemoteFake(f"http://127.0.0.1:{provider_port}/v1"), args, values)
                    await _grpc_front(env, server, args, values)
                await settle_idle(server, longest=3.0)  # within the embedding model's keep-alive
                record_memory(server, MEMORY_STATES[1], values)
                await asyncio.sleep(EMBEDDING_KEEP_ALIVE + 1.0)
                await settle_idle(server)
                record_memory(server, MEMORY_STATES[2], values)
            finally:
                server.stop()
    finally:
        provider.terminate()
        provider.wait()
    return Figures(values)


async def _wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def _load(server: Server, args: argparse.Namespace, values: dict[str, float]) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=server.http_url, headers=headers, timeout=60, limits=limits
    ) as client:
        for i in range(20):  # warm-up: connections, caches, first-call paths
            agent = (await client.post("/v1/agents", json=agent_body(i))).json()
            await client.post(f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "hi"}]})

        create_times = []
        agent_ids = []
        cpu_before = server.cpu_seconds()
        for i in range(args.creates):
            started = time.perf_counter()
            response = await client.post("/v1/agents", json=agent_body(i))
            create_times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            agent_ids.append(response.json()["id"])
        values["server CPU per agent create"] = (server.cpu_seconds() - cpu_before) / args.creates * 1000
        values["agent create p50"] = statistics.median(create_times)
        values["agent create p99"] = percentile(create_times, 99)

        send_times = []
        for i in range(args.sends):
            agent_id = agent_ids[i % len(agent_ids)]
            started = time.perf_counter()
            response = await client.post(
                f"/v1/agents/{agent_id}/messages", json={"messages": [{"content": f"message {i}"}]}
            )
            send_times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
        values["send message p50 (1 client)"] = statistics.median(send_times)
        values["send message p99 (1 client)"] = percentile(send_times, 99)
        if args.footprint:
            return

        named = server.named_services()
        processes = list(named.values())
        each_before = [sum(p.cpu_times()[:2]) for p in processes]
        cpu_before = sum(each_before)
        done = 0
        stop_at = time.perf_counter() + args.seconds

        async def worker(agent_id: str) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                response = await client.post(
                    f"/v1/agents/{agent_id}/messages", json={"messages": [{"content": "go"}]}
                )
                response.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(agent_ids[i % len(agent_ids)]) for i in range(16)))
        elapsed = time.perf_counter() - started
        cpu_used = sum(sum(p.cpu_times()[:2]) for p in processes) - cpu_before
        values["throughput (16 clients)"] = done / elapsed
        values["server CPU per message"] = cpu_used / max(done, 1) * 1000
        for name, process, before in zip(named, processes, each_before, strict=True):
            values[f"  CPU/msg: {name}"] = (sum(process.cpu_times()[:2]) - before) / max(done, 1) * 1000


async def _stream(
    server: Server, fake: RemoteFake, args: argparse.Namespace, values: dict[str, float]
) -> None:
    """Time from the provider sending its first token to the client reading it as an SSE event.

    The fake stamps its first chunk with its send time (same machine clock); the rest of the reply
    follows after a pause, so the first event cannot ride on the complete reply.
    """
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=60) as client:
        agent = (await client.post("/v1/agents", json=agent_body(0))).json()
        latencies = []
        for i in range(args.streams + 5):
            fake.script(
                {"content": "first token, then the rest of the answer", "stamp": True, "stream_pause": 0.02}
            )
            first: float | None = None
            async with client.stream(
                "POST",
                f"/v1/agents/{agent['id']}/messages/stream",
                json={"messages": [{"content": f"stream {i}"}], "stream_tokens": True},
            ) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if first is None and '"assistant_message_delta"' in line:
                        received = time.time()
                        sent = float(json.loads(line.removeprefix("data: "))["content"].split()[0][1:])
                        first = (received - sent) * 1000
            if first is None:
                raise RuntimeError("the stream carried no token delta")
            if i >= 5:  # warm-up
                latencies.append(first)
        values["stream 1st event after token p50"] = statistics.median(latencies)
        values["stream 1st event after token p99"] = percentile(latencies, 99)


async def _grpc_front(
    env: dict[str, str], server: Server, args: argparse.Namespace, values: dict[str, float]
) -> None:
    """GetAgent on the agent service's own port and through the gateway's gRPC front (ADR 0009)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=60) as client:
        agent = (await client.post("/v1/agents", json=agent_body(0))).json()
    request = agent_pb2.GetAgentRequest(agent_id=agent["id"])
    # The API key where the services take it on gRPC; the actor (as the root key's) where they do not yet.
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {API_KEY}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{env['MNEMO_GRPC_PORT']}") as channel:
        try:
            await agent_pb2_grpc.AgentServiceStub(channel).GetAgent(request, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
            metadata = ((ORG_KEY, "org-default"), (USER_KEY, "user-default"))
    for label, address in (
        ("agent port", f"127.0.0.1:{env['MNEMO_AGENT_PORT']}"),
        ("front", f"127.0.0.1:{env['MNEMO_GRPC_PORT']}"),
    ):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            times = []
            for i in range(args.sends + 20):
                started = time.perf_counter()
                await stub.GetAgent(request, metadata=metadata)
                if i >= 20:  # warm-up
                    times.append((time.perf_counter() - started) * 1000)
        values[f"gRPC GetAgent p50, {label}"] = statistics.median(times)
    values["grpc front overhead p50"] = (
        values["gRPC GetAgent p50, front"] - values["gRPC GetAgent p50, agent port"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of the 16-client phase")
    parser.add_argument("--streams", type=int, default=100, help="streamed turns for the first-event latency")
    parser.add_argument(
        "--backends",
        default="sqlite",
        help="comma-separated: sqlite (each service's file) and/or postgres (one embedded Postgres 18 for all "
        "services, a schema each); each backend gets a fresh mesh, one after the other in this run",
    )
    parser.add_argument(
        "--footprint",
        action="store_true",
        help="start-up, idle memory, agent create and 1-client sends only (no throughput, stream, gRPC phases)",
    )
    args = parser.parse_args()
    if args.quick:
        args.creates, args.sends, args.seconds, args.streams = 60, 100, 5.0, 30
    if args.footprint:
        args.sends = min(args.sends, 100)
    for backend in args.backends.split(","):
        if backend == "postgres":
            with embedded_postgres() as url:
                figures = asyncio.run(measure(args, url))
        else:
            figures = asyncio.run(measure(args))
        print(f"\n{backend}:")
        figures.print()


if __name__ == "__main__":
    main()
