"""Mesh channels over several replicas of a service: calls rotate, a stopped replica is left out, and
servers recycle connections so clients resolve (and reach) replicas started later."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest

from mnemo_core.actor import acting_as
from mnemo_core.channels import channel_target, mesh_channel
from mnemo_core.interceptors import outgoing_metadata
from mnemo_core.server import RunningServer, start_server
from tests.service.conftest import TEST_CREDENTIAL, new_actor

_SERVICE = "mnemo.test.v1.Replica"


class _Replica:
    """A server app whose one method answers with the replica's name and the caller's address."""

    def __init__(self, name: str) -> None:
        self.name = name

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        async def name(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return f"{self.name} {context.peer()}".encode()

        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(name)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Name": handler}),))
        return [_SERVICE]

    async def aclose(self) -> None:
        return None


async def _replicas(
    stack: AsyncExitStack, *names: str, max_connection_age: float = 300.0
) -> list[RunningServer]:
    servers = []
    for name in names:
        server = await start_server(
            _Replica(name),
            host="127.0.0.1",
            port=0,
            credential=TEST_CREDENTIAL,
            max_connection_age=max_connection_age,
        )
        stack.push_async_callback(server.stop, 0)
        servers.append(server)
    return servers


async def _ask(channel: grpc.aio.Channel) -> tuple[str, str]:
    with acting_as(new_actor()):
        metadata = tuple(outgoing_metadata(TEST_CREDENTIAL, None))
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{_SERVICE}/Name")
    answer = await method(b"", timeout=5, wait_for_ready=True, metadata=metadata)
    name, peer = answer.decode().split(" ", 1)
    return name, peer


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


def test_a_list_of_replicas_becomes_one_target_of_ip_addresses() -> None:
    assert channel_target("localhost:1,127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert channel_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert channel_target("dns:///memory:50052") == "dns:///memory:50052"
    assert channel_target("127.0.0.1:50052") == "127.0.0.1:50052"


async def test_calls_to_a_list_of_replicas_rotate_over_all_of_them(stack: AsyncExitStack) -> None:
    a, b = await _replicas(stack, "a", "b")
    channel = mesh_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    stack.push_async_callback(channel.close)
    await _ask(channel)
    await asyncio.sleep(0.2)  # both subchannels connect
    answered = Counter([(await _ask(channel))[0] for _ in range(20)])
    assert answered["a"] >= 8
    assert answered["b"] >= 8


async def test_a_stopped_replica_is_left_out_and_calls_go_on(stack: AsyncExitStack) -> None:
    a, b = await _replicas(stack, "a", "b")
    channel = mesh_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    stack.push_async_callback(channel.close)
    await _ask(channel)
    await b.stop(0)
    await asyncio.sleep(0.2)
    answered = Counter([(await _ask(channel))[0] for _ in range(10)])
    assert answered == {"a": 10}


async def test_a_connection_is_recycled_after_its_max_age_and_no_call_fails(stack: AsyncExitStack) -> None:
    (server,) = await _replicas(stack, "a", max_connection_age=1.0)
    channel = mesh_channel(f"127.0.0.1:{server.port}")
    stack.push_async_callback(channel.close)
    peers = set()
    loop = asyncio.get_running_loop()
    until = loop.time() + 3.5
    while loop.time() < until:
        _, peer = await _ask(channel)
        peers.add(peer)
        await asyncio.sleep(0.05)
    # Each connection comes from a new client port; at least one GOAWAY was followed by a reconnect.
    assert len(peers) >= 2
