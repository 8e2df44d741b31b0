"""Two replicas of the memory service on one Postgres, called through one channel that rotates over both:
what one replica writes the other reads at once, and concurrent edits spread over both lose nothing."""

# The fixtures come from memory_with_embeddings and conftest and are named as arguments (pytest's way).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import block_pb2, block_pb2_grpc, message_pb2_grpc, passage_pb2, passage_pb2_grpc
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_core.actor import acting_as
from mnemo_core.channels import mesh_channel, mesh_stub
from tests.service.conftest import TEST_CREDENTIAL, Served, new_actor, new_agent_id
from tests.service.memory_with_embeddings import memory_postgres, memory_with_llm  # noqa: F401 - fixture


@pytest.fixture(scope="module")
async def replicas(
    tmp_path_factory: pytest.TempPathFactory, memory_postgres: str, llm_service: Served
) -> AsyncIterator[tuple[Served, Served]]:
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                memory_with_llm(
                    tmp_path_factory.mktemp(f"memory-{name}"), llm_service.address, memory_postgres
                )
            )
            for name in ("a", "b")
        ]
        yield a, b


@pytest.fixture
async def both(replicas: tuple[Served, Served]) -> str:
    """The address list of both replicas, as a caller's settings name it."""
    a, b = replicas
    return f"{a.address},{b.address}"


async def test_a_passage_stored_through_one_replica_is_found_at_once_through_the_other(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    on_a, on_b = a.stub(passage_pb2_grpc.PassageServiceStub), b.stub(passage_pb2_grpc.PassageServiceStub)
    with acting_as(new_actor()):
        agent_id = new_agent_id()
        await on_a.CreatePassages(
            passage_pb2.CreatePassagesRequest(
                agent_id=agent_id, text="The lighthouse keeper is called Ingrid."
            )
        )
        found = await on_b.SearchPassages(
            passage_pb2.SearchPassagesRequest(agent_id=agent_id, query="who keeps the lighthouse")
        )
    assert [m.passage.text for m in found.matches] == ["The lighthouse keeper is called Ingrid."]


async def test_concurrent_appends_spread_over_both_replicas_lose_no_block_update(
    both: str,
) -> None:
    writers = 16
    channel = mesh_channel(both)
    blocks = mesh_stub(block_pb2_grpc.BlockServiceStub, channel, TEST_CREDENTIAL)
    try:
        with acting_as(new_actor()):
            agent_id = new_agent_id()
            created = await blocks.CreateBlock(
                block_pb2.CreateBlockRequest(
                    block=block_pb2.Block(label="human", value="start", limit=4000), agent_id=agent_id
                )
            )
            await asyncio.gather(
                *(
                    blocks.AppendBlockValue(
                        block_pb2.AppendBlockValueRequest(
                            agent_id=agent_id, label="human", content=f"line {i}"
                        )
                    )
                    for i in range(writers)
                )
            )
            final = (await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=created.block.id))).block
    finally:
        await channel.close()
    assert sorted(final.value.split("\n")[1:]) == sorted(f"line {i}" for i in range(writers))
    assert final.version == writers + 1


async def test_steps_appended_concurrently_through_both_replicas_are_kept_whole_and_once(both: str) -> None:
    steps = 12
    channel = mesh_channel(both)
    history = mesh_stub(message_pb2_grpc.MessageServiceStub, channel, TEST_CREDENTIAL)

    def step(i: int) -> history_pb2.AppendMessagesRequest:
        return history_pb2.AppendMessagesRequest(
            agent_id=agent_id,
            run_id="run-1",
            step=i,
            messages=[
                message_pb2.Message(user=message_pb2.UserContent(text=f"question {i}")),
                message_pb2.Message(assistant=message_pb2.AssistantContent(text=f"answer {i}")),
            ],
        )

    try:
        with acting_as(new_actor()):
            agent_id = new_agent_id()
            # Every step twice (a retry racing its original), all at once over both replicas.
            await asyncio.gather(*(history.AppendMessages(step(i)) for i in [*range(steps), *range(steps)]))
            listed = await history.ListMessages(
                history_pb2.ListMessagesRequest(agent_id=agent_id, page_size=100)
            )
    finally:
        await channel.close()
    texts = [m.user.text or m.assistant.text for m in listed.messages]
    assert Counter(texts) == Counter(
        [*(f"question {i}" for i in range(steps)), *(f"answer {i}" for i in range(steps))]
    )
    # Each step's two messages sit together, question first.
    for first, second in zip(texts[::2], texts[1::2], strict=True):
        assert first.startswith("question ")
        assert second == first.replace("question", "answer")
