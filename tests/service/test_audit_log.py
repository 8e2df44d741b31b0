"""Audit events on gRPC (writes of API-key clients only, with actor, key, resource, request id and outcome),
the recorder's batching and shutdown flush, and the log's retention."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from mnemo.agent.v1 import identity_pb2_grpc
from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_agent.app import MIGRATIONS
from mnemo_agent.audit_log import AuditLog
from mnemo_agent.audit_store import AuditFilter
from mnemo_core.actor import ADMIN, Actor, acting_as
from mnemo_core.api_keys import KeyResolver
from mnemo_core.audit import AuditEvent, AuditRecorder
from mnemo_core.channels import mesh_channel
from mnemo_core.db import Database
from mnemo_core.migrations import upgrade
from mnemo_core.server import start_server
from mnemo_core.wire import utcnow
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.fakes.llm_provider import free_port
from tests.service.conftest import (
    TEST_CREDENTIAL,
    Served,
    clean_environment,
    identity_service,
    make_key_holder,
)


class ListSink:
    """Keeps what it is sent; fails while `down` is set."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.batches = 0
        self.down = False

    async def __call__(self, events: Sequence[AuditEvent]) -> None:
        if self.down:
            raise ConnectionError("agent service unreachable")
        self.batches += 1
        self.events.extend(events)


def _event(n: int = 0, *, days_ago: float = 0) -> AuditEvent:
    return AuditEvent(
        org_id="org-a",
        user_id="alice",
        key_id="key-1",
        action=f"POST /v1/things/{n}",
        resource="/v1/things",
        request_id=f"req-{n}",
        outcome="OK",
        code=200,
        surface="rest",
        time=utcnow() - timedelta(days=days_ago),
    )


async def test_the_recorder_sends_in_batches_keeps_events_while_the_sink_is_down_and_flushes_on_close() -> (
    None
):
    sink = ListSink()
    recorder = AuditRecorder(sink, flush_seconds=3600, batch_size=2)
    sink.down = True
    for n in range(3):
        recorder.record(_event(n))
    await recorder.flush()
    assert sink.events == []
    sink.down = False
    recorder.record(_event(3))
    await recorder.aclose()
    assert [e.request_id for e in sink.events] == ["req-0", "req-1", "req-2", "req-3"]
    assert sink.batches == 2


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[Served]:
    async with identity_service(tmp_path / "agent") as served:
        yield served


@pytest.fixture
async def audited_memory(
    tmp_path: Path, identity: Served
) -> AsyncIterator[tuple[Served, AuditRecorder, ListSink]]:
    with clean_environment(tmp_path):
        settings = MemorySettings(home=tmp_path, llm_addr=f"127.0.0.1:{free_port()}")
    app = await build_memory(settings)
    sink = ListSink()
    recorder = AuditRecorder(sink, flush_seconds=3600)
    keys = KeyResolver(identity.stub(identity_pb2_grpc.IdentityServiceStub), 5.0)
    running = await start_server(
        app, host="127.0.0.1", port=0, credential=TEST_CREDENTIAL, keys=keys, audit=recorder
    )
    channel = mesh_channel(f"127.0.0.1:{running.port}")
    yield Served(app=app, running=running, channel=channel), recorder, sink
    await channel.close()
    await running.stop(0)
    await app.aclose()


async def test_grpc_writes_of_key_holders_are_recorded_and_reads_and_mesh_hops_are_not(
    audited_memory: tuple[Served, AuditRecorder, ListSink], identity: Served
) -> None:
    memory, recorder, sink = audited_memory
    holder = await make_key_holder(identity)
    blocks = block_pb2_grpc.BlockServiceStub(memory.channel)
    created = await blocks.CreateBlock(
        block_pb2.CreateBlockRequest(block=block_pb2.Block(label="human", value="private words")),
        metadata=(*holder.metadata, ("x-request-id", "req-42")),
    )
    await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=holder.metadata)
    with pytest.raises(grpc.aio.AioRpcError):
        await blocks.DeleteBlock(
            block_pb2.DeleteBlockRequest(block_id="block-nope"), metadata=holder.metadata
        )
    # A hop inside the mesh (signed, no key) is recorded by whoever holds the client's request, not here.
    with acting_as(Actor(org_id=holder.org_id, user_id=holder.user_id)):
        await memory.stub(block_pb2_grpc.BlockServiceStub).DeleteBlock(
            block_pb2.DeleteBlockRequest(block_id=created.block.id)
        )
    await recorder.aclose()

    made, failed = sink.events
    assert (made.org_id, made.user_id, made.surface) == (holder.org_id, holder.user_id, "grpc")
    assert made.key_id
    assert made.action == "/mnemo.memory.v1.BlockService/CreateBlock"
    assert made.request_id == "req-42"
    assert (made.outcome, made.code) == ("OK", 0)
    assert failed.action == "/mnemo.memory.v1.BlockService/DeleteBlock"
    assert failed.resource == "block_id=block-nope"
    assert failed.outcome == "BLOCK_NOT_FOUND"
    assert failed.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert holder.secret not in str(sink.events)
    assert "private words" not in str(sink.events)


async def test_events_past_the_retention_are_pruned(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}", schema="agent")
    await upgrade(db, MIGRATIONS)
    log = AuditLog(db, retention_days=30)
    await log.record([_event(1, days_ago=31), _event(2, days_ago=29), _event(3)])
    pruned = await log.prune()
    admin = Actor(org_id="org-a", user_id="alice", role=ADMIN)
    kept, _ = await log.list_page(admin, AuditFilter(org_id=""))
    await db.dispose()
    assert pruned == 1
    assert [e.request_id for e in kept] == ["req-3", "req-2"]
