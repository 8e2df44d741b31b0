"""Chaos: concurrent clients send turns while services are SIGKILLed and the provider misbehaves.

`mnemo server` runs the mesh (and restarts what dies); the fake provider answers in another process and
injects 429s with Retry-After, 500s, timeouts, streams cut part-way and slow first tokens. Each client owns
an agent and sends turns (plain, streamed and async) with idempotency keys, retrying a retryable failure
with the same key, like a well-behaved client; every few seconds a random service (gateway included) is
killed with SIGKILL. Afterwards the mesh is checked against the clients' ledger: every turn succeeded
(perhaps after retries), none lost or duplicated, no orphaned tool message, every history in order, block
limits held, every service healthy, no run left running.

    python -m bench.chaos                       # the full form (`make chaos`): both backends
    python -m bench.chaos --backend sqlite --clients 8 --duration 20     # a short form

Exits non-zero when a check fails; prints the ledger's figures and every violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.fakes.llm_provider import REMEMBER, RemoteFake, free_port
from tests.harness import mesh_env
from tests.postgres import embedded_postgres

SERVICES = ("gateway", "agent", "memory", "tools", "llm")
MODES = ("plain", "stream", "async")
BLOCK_LIMIT = 400
# Statuses a client retries with the same idempotency key (409: the key's run is still going).
RETRYABLE = {409, 429, 502, 503, 504}
# A turn that has not succeeded after this long counts as failed.
TURN_GIVE_UP = 180.0


@dataclass
class Turn:
    """One turn in a client's ledger."""

    client: int
    agent_id: str
    key: str
    text: str
    mode: str
    attempts: list[str] = field(default_factory=list)
    ok: bool = False
    run_id: str = ""
    latency: float = 0.0


@dataclass
class Ledger:
    """What the clients sent and saw, and what the chaos did."""

    turns: list[Turn] = field(default_factory=list)
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


class Retry(Exception):
    """A retryable failure of one attempt."""


# ----- the processes -----


@contextlib.contextmanager
def fake_provider() -> Iterator[RemoteFake]:
    """The fake provider in a process of its own (not competing with the clients for this one's GIL)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm_provider", "--port", str(port), "--no-record"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fake = RemoteFake(f"http://127.0.0.1:{port}/v1")
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{fake.base_url}/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield fake
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def database(backend: str) -> Iterator[dict[str, str]]:
    """Environment for the backend: nothing for SQLite, a fresh embedded Postgres database otherwise."""
    if backend == "sqlite":
        yield {}
        return
    with embedded_postgres() as url:
        # Short leases: the runs of a killed agent service are taken over soon after its restart.
        yield {"MNEMO_DATABASE_URL": url, "MNEMO_RUN_LEASE_SECONDS": "3", "MNEMO_RUN_SWEEP_SECONDS": "0.5"}


@dataclass
class Server:
    """A running `mnemo server` and where it listens."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['MNEMO_HTTP_PORT']}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['MNEMO_API_KEY']}"}

    def port(self, service: str) -> int:
        return int(self.env["MNEMO_HTTP_PORT" if service == "gateway" else f"MNEMO_{service.upper()}_PORT"])

    def pid_of(self, service: str) -> int | None:
        """The pid of the child listening on the service's port (None while it is down)."""
        port = self.port(service)
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == port
                    for c in child.net_connections("tcp")
                ):
                    return child.pid
        return None


@contextlib.contextmanager
def mnemo_server(home: Path, provider_url: str, extra: dict[str, str]) -> Iterator[Server]:
    env = mesh_env(
        home,
        provider_url=provider_url,
        extra={
            # The provider's faults are the llm gateway's to absorb first: quick retries, a short timeout.
            "MNEMO_PROVIDER_MAX_RETRIES": "3",
            "MNEMO_PROVIDER_TIMEOUT": "3",
            "MNEMO_PROVIDER_RETRY_INITIAL_DELAY": "0.2",
            "MNEMO_PROVIDER_RETRY_MAX_DELAY": "1",
            "MNEMO_SHUTDOWN_GRACE": "5",
            **extra,
        },
    )
    log = home / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mnemo.cli", "server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert process.stdout is not None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"mnemo server did not start:\n{log.read_text()}")
            if line.startswith("Press Ctrl-C"):
                break
        yield Server(process, env, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ----- the clients -----


def _new_key(client: int, n: int) -> str:
    return f"chaos-{client}-{n}-{random.getrandbits(32):08x}"


def _status(response: httpx.Response) -> None:
    """Raises Retry for a retryable status, RuntimeError for any other failure."""
    if response.status_code in RETRYABLE:
        raise Retry(f"{response.status_code} {response.text[:120]}")
    if response.status_code >= 400:
        raise RuntimeError(f"{response.status_code} {response.text[:300]}")


async def _plain(client: httpx.AsyncClient, turn: Turn) -> None:
    response = await client.post(
        f"/v1/agents/{turn.agent_id}/messages",
        json={"messages": [{"content": turn.text}]},
        headers={"Idempotency-Key": turn.key},
    )
    _status(response)
    body = response.json()
    turn.run_id = body["run_id"]
    if body["stop_reason"]["stop_reason"] != "end_turn":
        raise RuntimeError(f"stop reason {body['stop_reason']}")


async def _stream(client: httpx.AsyncClient, turn: Turn) -> None:
    stop = None
    async with client.stream(
        "POST",
        f"/v1/agents/{turn.agent_id}/messages/stream",
        json={"messages": [{"content": turn.text}]},
        headers={"Idempotency-Key": turn.key},
    ) as response:
        if response.status_code >= 400:
            await response.aread()
            _status(response)
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            if "detail" in event and "reason" in event:
                if event.get("retry_after") is not None:
                    raise Retry(f"stream error event {event['reason']}")
                raise RuntimeError(f"stream error event {event}")
            if event.get("message_type") == "stop_reason":
                stop, turn.run_id = event["stop_reason"], event["run_id"]
    if stop is None:
        raise Retry("the stream ended without a stop reason")
    if stop != "end_turn":
        raise RuntimeError(f"stop reason {stop}")


async def _async(client: httpx.AsyncClient, turn: Turn) -> None:
    response = await client.post(
        f"/v1/agents/{turn.agent_id}/messages/async",
        json={"messages": [{"content": turn.text}]},
        headers={"Idempotency-Key": turn.key},
    )
    _status(response)
    turn.run_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        try:
            polled = await client.get(f"/v1/runs/{turn.run_id}")
        except httpx.TransportError:
            continue
        if polled.status_code in RETRYABLE:
            continue
        _status(polled)
        run = polled.json()
        if run["status"] == "completed":
            if run["stop_reason"] != "end_turn":
                raise RuntimeError(f"stop reason {run['stop_reason']}")
            return
        if run["status"] in ("failed", "cancelled"):
            raise Retry(f"run {run['status']}: {run['error']}")
    raise Retry("the run did not finish within 60 s")


SENDERS = {"plain": _plain, "stream": _stream, "async": _async}


async def send(client: httpx.AsyncClient, turn: Turn) -> None:
    """Sends the turn until it succeeds, again with the same key after each retryable failure."""
    started = time.monotonic()
    while time.monotonic() - started < TURN_GIVE_UP:
        try:
            await SENDERS[turn.mode](client, turn)
        except Retry as exc:
            turn.attempts.append(f"retry: {exc}")
        except httpx.TransportError as exc:
            turn.attempts.append(f"retry: {type(exc).__name__}")
        except RuntimeError as exc:
            turn.attempts.append(f"failed: {exc}")
            return
        else:
            turn.ok = True
            turn.latency = time.monotonic() - started
            return
        await asyncio.sleep(0.3 + random.random() * 0.7)
    turn.attempts.append("gave up")


async def client_loop(
    server: Server, index: int, agent_id: str, until: float, ledger: Ledger, rng: random.Random
) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60) as client:
        n = 0
        while time.monotonic() < until:
            text = f"c{index:02d} t{n:03d}"
            if n % 3 == 2:
                text = f"{text} {REMEMBER}fact-{index:02d}-{n:03d}"
            turn = Turn(index, agent_id, _new_key(index, n), text, rng.choice(MODES))
            ledger.turns.append(turn)
            await send(client, turn)
            n += 1


async def create_agent(client: httpx.AsyncClient, index: int) -> str:
    for _ in range(100):
        with contextlib.suppress(httpx.TransportError):
            response = await client.post(
                "/v1/agents",
                json={
                    "name": f"chaos-{index}",
                    "model": "openai/chaos",
                    "memory_blocks": [{"label": "human", "value": "", "limit": BLOCK_LIMIT}],
                },
            )
            if response.status_code == 201:
                return str(response.json()["id"])
            if response.status_code not in RETRYABLE:
                raise RuntimeError(response.text)
        await asyncio.sleep(0.5)
    raise RuntimeError("cannot create an agent")


# ----- the chaos -----


async def healthy(client: httpx.AsyncClient) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await client.get("/v1/health", timeout=2)).status_code == 200
    return False


async def until_healthy(client: httpx.AsyncClient) -> None:
    """Returns once every service answers (polled: the mesh has no event for it)."""
    for _ in range(600):
        if await healthy(client):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the mesh did not become healthy within 120 s")


async def killer(server: Server, until: float, every: float, ledger: Ledger, rng: random.Random) -> None:
    """SIGKILLs a random service every `every` seconds (give or take 40 %), once the mesh is whole again."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        while time.monotonic() < until:
            await until_healthy(client)
            await asyncio.sleep(every * rng.uniform(0.6, 1.4))
            if time.monotonic() >= until:
                return
            victim = rng.choice(SERVICES)
            pid = server.pid_of(victim)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                ledger.kills.append((time.monotonic(), victim, pid))


# ----- the checks -----


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    for _ in range(60):
        with contextlib.suppress(httpx.TransportError):
            response = await client.get(path, params=params)
            if response.status_code == 200:
                return response.json()
            if response.status_code not in RETRYABLE:
                raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"GET {path}: no answer")


def check_history(agent_id: str, sent: list[Turn], history: list[dict[str, Any]]) -> list[str]:
    """Lost, duplicated, unordered or orphaned messages of one agent's history."""
    problems = []
    users = [m["content"] for m in history if m["message_type"] == "user_message"]
    expected = [t.text for t in sent if t.ok]
    counts = Counter(users)
    for text in expected:
        if counts[text] == 0:
            problems.append(f"{agent_id}: lost turn {text!r}")
    for text, count in counts.items():
        if count > 1:
            problems.append(f"{agent_id}: turn {text!r} stored {count} times")
        if text not in expected:
            problems.append(f"{agent_id}: stored a turn no client saw succeed: {text!r}")
    if [u for u in users if u in expected] != [t for t in expected if t in counts]:
        problems.append(f"{agent_id}: turns out of order: {users}")
    calls: dict[str, int] = {}
    for index, message in enumerate(history):
        if message["message_type"] == "tool_call_message":
            calls[message["tool_call"]["tool_call_id"]] = index
        elif (
            message["message_type"] == "tool_return_message"
            and calls.pop(message["tool_call_id"], None) is None
        ):
            problems.append(f"{agent_id}: orphaned tool return {message['tool_call_id']}")
    problems.extend(f"{agent_id}: orphaned tool call {call}" for call in calls)
    # Each turn's answer follows its own message, before the next one.
    current = None
    for message in history:
        if message["message_type"] == "user_message":
            current = message["content"]
        elif message["message_type"] == "assistant_message" and current is not None:
            wanted = "noted" if REMEMBER in current else f"ack: {current}"
            if message["content"] != wanted:
                problems.append(f"{agent_id}: answer {message['content']!r} after {current!r}")
    dates = [m["date"] for m in history if m.get("date")]
    if dates != sorted(dates):
        problems.append(f"{agent_id}: history not in time order")
    return problems


async def check(server: Server, agents: list[str], ledger: Ledger) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60) as client:
        deadline = time.monotonic() + 120
        while not await healthy(client):
            if time.monotonic() > deadline:
                ledger.violations.append("the mesh is not healthy after the chaos")
                return
            await asyncio.sleep(0.5)
        health = await _get(client, "/v1/health")
        if any(status != "SERVING" for status in health["services"].values()):
            ledger.violations.append(f"unhealthy services: {health}")
        for turn in ledger.turns:
            if not turn.ok:
                attempts = Counter(turn.attempts)
                ledger.violations.append(
                    f"turn {turn.text!r} ({turn.mode}) never succeeded: {turn.attempts[-1]} "
                    f"(attempts: {dict(attempts.most_common(4))})"
                )
        for agent_id in agents:
            sent = [t for t in ledger.turns if t.agent_id == agent_id]
            history = await _get(client, f"/v1/agents/{agent_id}/messages", limit=1000)
            ledger.violations.extend(check_history(agent_id, sent, history))
            blocks = await _get(client, f"/v1/agents/{agent_id}/core-memory/blocks")
            for block in blocks:
                if len(block["value"]) > block["limit"]:
                    ledger.violations.append(f"{agent_id}: block {block['label']} over its limit")
                facts = Counter(line for line in block["value"].splitlines() if line.startswith("fact-"))
                ledger.violations.extend(
                    f"{agent_id}: fact {fact} appended {n} times" for fact, n in facts.items() if n > 1
                )
            runs = await _get(client, "/v1/runs", agent_id=agent_id, limit=1000)
            for run in runs:
                if run["status"] in ("running", "created"):
                    ledger.violations.append(f"{agent_id}: run {run['id']} left {run['status']}")
            keys = Counter(r["idempotency_key"] for r in runs)
            ledger.violations.extend(f"{agent_id}: {n} runs for key {k}" for k, n in keys.items() if n > 1)
            unknown = set(keys) - {t.key for t in sent}
            ledger.violations.extend(f"{agent_id}: a run for a key no client sent: {k}" for k in unknown)


async def wait_for_runs(server: Server, agents: list[str], seconds: float = 90.0) -> None:
    """Waits until no run of the agents is running (async runs resumed after a restart finish)."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=30) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            busy = False
            for agent_id in agents:
                with contextlib.suppress(httpx.HTTPError, KeyError):
                    runs = (
                        await client.get("/v1/runs", params={"agent_id": agent_id, "status": "running"})
                    ).json()
                    busy = busy or bool(runs)
            if not busy:
                return
            await asyncio.sleep(1)


# ----- one run -----


async def chaos(server: Server, args: argparse.Namespace, rng: random.Random) -> Ledger:
    ledger = Ledger()
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60) as client:
        agents = [await create_agent(client, i) for i in range(args.clients)]
    until = time.monotonic() + args.duration
    await asyncio.gather(
        killer(server, until, args.kill_every, ledger, rng),
        *(
            client_loop(server, i, agent_id, until, ledger, random.Random(rng.random()))
            for i, agent_id in enumerate(agents)
        ),
    )
    await wait_for_runs(server, agents)
    await check(server, agents, ledger)
    return ledger


def report(backend: str, ledger: Ledger, injected: dict[str, int], elapsed: float, log: Path) -> bool:
    turns = ledger.turns
    retried = [t for t in turns if t.attempts and t.ok]
    by_mode = Counter(t.mode for t in turns)
    kills = Counter(victim for _, victim, _ in ledger.kills)
    latencies = sorted(t.latency for t in turns if t.ok)
    p50 = latencies[len(latencies) // 2] if latencies else 0.0
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    restarts = sum("restarting it" in line for line in log.read_text().splitlines())
    print(f"chaos on {backend}: {elapsed:.0f} s")
    print(f"  turns        {len(turns)} ({', '.join(f'{m} {n}' for m, n in sorted(by_mode.items()))})")
    print(f"  succeeded    {sum(t.ok for t in turns)}, of which after retries {len(retried)}")
    print(f"  latency      p50 {p50:.2f} s, p99 {p99:.2f} s (retries included)")
    print(f"  kills        {len(ledger.kills)} ({', '.join(f'{s} {n}' for s, n in sorted(kills.items()))})")
    print(f"  restarts     {restarts} (logged by the supervisor)")
    print(f"  faults       {', '.join(f'{k} {v}' for k, v in sorted(injected.items())) or 'none'}")
    print(f"  violations   {len(ledger.violations)}")
    for violation in ledger.violations[:50]:
        print(f"    - {violation}")
    return not ledger.violations


def run_backend(backend: str, args: argparse.Namespace) -> bool:
    rng = random.Random(args.seed)
    with (
        tempfile.TemporaryDirectory(prefix="mnemo-chaos-") as home,
        fake_provider() as fake,
        database(backend) as extra,
        mnemo_server(Path(home), fake.base_url, extra) as server,
    ):
        fake.inject_faults(
            conversing=True,
            rate_limit=args.fault_rate,
            server_error=args.fault_rate,
            timeout=args.fault_rate / 4,
            truncate=args.fault_rate,
            slow_first_token=args.fault_rate * 2,
            hang=5.0,
            slow=1.0,
            retry_after=1.0,
            seed=args.seed,
        )
        started = time.monotonic()
        ledger = asyncio.run(chaos(server, args, rng))
        ok = report(backend, ledger, fake.injected(), time.monotonic() - started, server.log)
        if server.process.poll() is not None:
            print(f"  mnemo server exited ({server.process.returncode}): {server.log}")
            ok = False
        if not ok and args.keep_log:
            Path(args.keep_log).write_text(server.log.read_text())
        return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load and kills")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills (on average)")
    parser.add_argument("--fault-rate", type=float, default=0.04, help="chance of each provider fault")
    parser.add_argument("--runs", type=int, default=1, help="consecutive runs per backend")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-log", default="", help="copy the server's log here when a run fails")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    passed = 0
    for number in range(args.runs):
        for backend in backends:
            if args.seed is None or number:
                args.seed = random.randrange(1 << 30)
            print(f"run {number + 1}/{args.runs}, seed {args.seed}")
            if not run_backend(backend, args):
                print(f"FAILED after {passed} passing runs")
                sys.exit(1)
            passed += 1
    print(f"PASSED {passed} runs")


if __name__ == "__main__":
    main()
