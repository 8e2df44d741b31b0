"""What observability costs a turn: send-message latency (1 client) and server CPU per message (16 clients)
with telemetry off, with metrics on (the default: a Prometheus endpoint per process), and with metrics and
traces exported over OTLP/HTTP to a receiver in this process.

The mesh runs as `mnemo server` against the zero-latency fake provider, as in `bench.mesh`.

    python -m bench.observe            # full run
    python -m bench.observe --quick    # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.mesh import Server, _wait_http, agent_body, percentile, start_server
from mnemo_core.settings import GRPC_SERVICES
from tests.fakes.llm_provider import free_port
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.harness import API_KEY, mesh_env

MODES = ("telemetry off", "metrics (default)", "metrics + traces")


def mode_env(mode: str, receiver: OtlpReceiver) -> dict[str, str]:
    if mode == "telemetry off":
        return {}
    ports = {f"MNEMO_{s.upper()}_METRICS_PORT": str(free_port()) for s in GRPC_SERVICES}
    if mode == "metrics (default)":
        return ports
    return {**ports, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.endpoint}/v1/traces"}


async def turns(server: Server, args: argparse.Namespace) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(
        base_url=server.http_url, headers=headers, timeout=60, limits=limits
    ) as client:
        agents = [(await client.post("/v1/agents", json=agent_body(i))).json()["id"] for i in range(16)]
        for agent_id in agents:  # warm-up
            await client.post(f"/v1/agents/{agent_id}/messages", json={"messages": [{"content": "hi"}]})
        times = []
        for i in range(args.sends):
            started = time.perf_counter()
            response = await client.post(
                f"/v1/agents/{agents[i % 16]}/messages", json={"messages": [{"content": f"message {i}"}]}
            )
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
        processes = list(server.named_services().values())
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in processes)
        done = 0
        stop_at = time.perf_counter() + args.seconds

        async def worker(agent_id: str) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                sent = await client.post(
                    f"/v1/agents/{agent_id}/messages", json={"messages": [{"content": "go"}]}
                )
                sent.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(agent_id) for agent_id in agents))
        elapsed = time.perf_counter() - started
        cpu = sum(sum(p.cpu_times()[:2]) for p in processes) - cpu_before
    return {
        "send p50 ms": statistics.median(times),
        "send p99 ms": percentile(times, 99),
        "msg/s (16 clients)": done / elapsed,
        "server CPU ms/msg": cpu / max(done, 1) * 1000,
    }


async def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    provider_port = free_port()
    provider = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [sys.executable, "-m", "tests.fakes.llm_provider", "--port", str(provider_port), "--no-record"]
    )
    receiver = OtlpReceiver().start()
    results = {}
    try:
        await _wait_http(f"http://127.0.0.1:{provider_port}/_fake/requests")
        for mode in MODES:
            with tempfile.TemporaryDirectory() as home:
                env = mesh_env(
                    Path(home),
                    provider_url=f"http://127.0.0.1:{provider_port}/v1",
                    extra=mode_env(mode, receiver),
                )
                _ready, server = start_server(env)
                try:
                    results[mode] = await turns(server, args)
                finally:
                    server.stop()
    finally:
        receiver.stop()
        provider.terminate()
        provider.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of the 16-client phase")
    args = parser.parse_args()
    if args.quick:
        args.sends, args.seconds = 100, 5.0
    results = asyncio.run(measure(args))
    columns = list(next(iter(results.values())))
    print(f"{'':<20}" + "".join(f"{c:>22}" for c in columns))
    for mode, figures in results.items():
        print(f"{mode:<20}" + "".join(f"{figures[c]:>22.2f}" for c in columns))


if __name__ == "__main__":
    main()
