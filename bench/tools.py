"""Tools benchmark: custom tool run latency (sandbox start included) and concurrent throughput.

The tools service runs as its own process on SQLite; the benchmark calls RunTool over gRPC for a
trivial tool, as the agent service does in a turn.

    python -m bench.tools            # full run
    python -m bench.tools --quick    # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core import mesh_credential
from mnemo_core.actor import Actor
from tests.fakes.llm_provider import free_port

# The internal credential the tools service under measurement is started with, and whom the calls act for.
CREDENTIAL = "bench-credential"
ACTOR = Actor("org-bench", "user-bench")


def metadata() -> tuple[tuple[str, str], ...]:
    """A signed hop for ACTOR (signatures hold for minutes, so one per call)."""
    return tuple(mesh_credential.actor_metadata(CREDENTIAL, ACTOR))


TRIVIAL = 'def add(a: int, b: int) -> int:\n    """Adds two numbers."""\n    return a + b\n'


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def wait_serving(address: str, process: asyncio.subprocess.Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"tools service exited with {process.returncode}")
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("tools service did not become healthy")


async def main(quick: bool) -> None:
    sequential = 100 if quick else 300
    concurrent_runs = 100 if quick else 400
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MNEMO_", "OTEL_"))}
        env.update(
            {
                "MNEMO_HOME": home,
                "MNEMO_TOOLS_PORT": str(port),
                "MNEMO_LOG_LEVEL": "WARNING",
                "MNEMO_INTERNAL_TOKEN": CREDENTIAL,
            }
        )
        env["MNEMO_CONFIG"] = str(Path(home) / "none.toml")
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "mnemo_tools", env=env)
        address = f"127.0.0.1:{port}"
        try:
            started = time.monotonic()
            await wait_serving(address, process)
            ready = time.monotonic() - started
            async with grpc.aio.insecure_channel(address) as channel:
                stub = tool_pb2_grpc.ToolServiceStub(channel)
                tool = (
                    await stub.CreateTool(
                        tool_pb2.CreateToolRequest(tool=tool_pb2.Tool(source_code=TRIVIAL)),
                        metadata=metadata(),
                    )
                ).tool
                request = tool_pb2.RunToolRequest(
                    tool_id=tool.id, arguments_json=json.dumps({"a": 2, "b": 3})
                )

                async def one() -> tuple[float, float]:
                    begin = time.perf_counter()
                    result = await stub.RunTool(request, metadata=metadata())
                    assert result.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS, result.content
                    assert result.content == "5"
                    return time.perf_counter() - begin, result.duration_seconds

                for _ in range(10):
                    await one()
                samples = [await one() for _ in range(sequential)]
                latencies = [s[0] * 1000 for s in samples]
                sandbox = [s[1] * 1000 for s in samples]
                throughput: dict[int, float] = {}
                for clients in (2, 4, 8):
                    remaining = concurrent_runs

                    async def client() -> None:
                        nonlocal remaining
                        while remaining > 0:
                            remaining -= 1
                            await one()

                    begin = time.perf_counter()
                    await asyncio.gather(*(client() for _ in range(clients)))
                    throughput[clients] = concurrent_runs / (time.perf_counter() - begin)
        finally:
            process.terminate()
            await process.wait()
    print(f"\ntools service ready in {ready:.2f} s (cores: {os.cpu_count()})")
    print(f"{'measure':<44} {'value':>9}  target")
    print(f"{'custom tool run p50 (RunTool over gRPC)':<44} {statistics.median(latencies):>7.1f}ms  <=50 ms")
    print(f"{'custom tool run p99':<44} {percentile(latencies, 99):>7.1f}ms")
    print(f"{'  of which in the service (p50)':<44} {statistics.median(sandbox):>7.1f}ms")
    for clients, rate in throughput.items():
        print(f"{f'throughput, {clients} concurrent clients':<44} {rate:>7.1f}/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
