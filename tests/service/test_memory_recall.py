"""MessageService.SearchMessages over real gRPC: recall by words and meaning, embedded in the background."""

# The fixtures come from memory_with_embeddings and are named as arguments (pytest's way).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf import timestamp_pb2

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.memory.v1 import message_pb2_grpc, search_pb2
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import InvalidArgument
from mnemo_memory.recall import GATHER_SECONDS
from tests.service.conftest import Served, new_actor, new_agent_id
from tests.service.memory_with_embeddings import (  # noqa: F401 - fixtures
    embedded_memory,
    memory_app,
    memory_database,
    memory_postgres,
    memory_with_llm,
    recall_messages,
)

if TYPE_CHECKING:
    from mnemo.memory.v1.message_pb2_grpc import MessageServiceAsyncStub as Messages


def user(text: str) -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text))


def assistant(text: str) -> message_pb2.Message:
    return message_pb2.Message(assistant=message_pb2.AssistantContent(text=text))


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


CONVERSATION = [
    (
        user("I just adopted a golden retriever puppy called Biscuit."),
        assistant("Congratulations on Biscuit!"),
    ),
    (user("My sister lives in Lisbon and works as an architect."), assistant("Lisbon is a lovely city.")),
    (user("Remind me that invoice INV-4471 is due Friday."), assistant("Noted: INV-4471 is due Friday.")),
]


async def converse(messages: Messages, served: Served) -> tuple[Actor, str, list[message_pb2.Message]]:
    actor, agent_id = new_actor(), new_agent_id()
    stored = []
    with acting_as(actor):
        for step, pair in enumerate(CONVERSATION):
            appended = await messages.AppendMessages(
                history_pb2.AppendMessagesRequest(
                    agent_id=agent_id, run_id=f"run-{step}", step=0, messages=pair
                )
            )
            stored += list(appended.messages)
    assert await memory_app(served).message_embedder.drained(timeout=30)
    return actor, agent_id, stored


async def find(
    messages: Messages, agent_id: str, query: str, **fields: object
) -> history_pb2.SearchMessagesResponse:
    return await messages.SearchMessages(
        history_pb2.SearchMessagesRequest(agent_id=agent_id, query=query, **fields)
    )


async def test_recall_finds_a_message_by_meaning_once_embedded(
    recall_messages: Messages, embedded_memory: Served
) -> None:
    actor, agent_id, _ = await converse(recall_messages, embedded_memory)
    with acting_as(actor):
        found = await find(
            recall_messages, agent_id, "what kind of dog do I have?", mode=search_pb2.SEARCH_MODE_VECTOR
        )
    assert found.matches[0].message.user.text == CONVERSATION[0][0].user.text
    assert found.embedding_model == "local/all-minilm-l6-v2"
    assert found.pending_embeddings == 0


async def test_recall_finds_an_exact_code_by_keyword_and_hybrid(
    recall_messages: Messages, embedded_memory: Served
) -> None:
    actor, agent_id, _ = await converse(recall_messages, embedded_memory)
    with acting_as(actor):
        keyword = await find(recall_messages, agent_id, "INV-4471", mode=search_pb2.SEARCH_MODE_KEYWORD)
        hybrid = await find(recall_messages, agent_id, "INV-4471", top_k=2)
    assert {m.message.WhichOneof("content") for m in keyword.matches} == {"user", "assistant"}
    assert all("INV-4471" in (m.message.user.text or m.message.assistant.text) for m in hybrid.matches)


async def test_recall_filters_by_role_and_time(recall_messages: Messages, embedded_memory: Served) -> None:
    actor, agent_id, stored = await converse(recall_messages, embedded_memory)
    created = stored[0].create_time.ToDatetime(tzinfo=UTC)
    with acting_as(actor):
        only_assistant = await find(
            recall_messages, agent_id, "Lisbon", kinds=[history_pb2.MESSAGE_KIND_ASSISTANT], top_k=10
        )
        future = await find(
            recall_messages, agent_id, "Lisbon", start_time=stamp(created + timedelta(days=1)), top_k=10
        )
        past = await find(recall_messages, agent_id, "Lisbon", end_time=stamp(created - timedelta(days=1)))
        window = await find(
            recall_messages,
            agent_id,
            "Lisbon",
            start_time=stamp(created - timedelta(minutes=1)),
            end_time=stamp(created + timedelta(minutes=1)),
        )
    assert {m.message.WhichOneof("content") for m in only_assistant.matches} == {"assistant"}
    assert list(future.matches) == []
    assert list(past.matches) == []
    assert any("Lisbon" in m.message.user.text for m in window.matches)


async def test_evicted_messages_stay_searchable(recall_messages: Messages, embedded_memory: Served) -> None:
    actor, agent_id, stored = await converse(recall_messages, embedded_memory)
    with acting_as(actor):
        await recall_messages.CompactContextWindow(
            history_pb2.CompactContextWindowRequest(agent_id=agent_id, keep_from_message_id=stored[-1].id)
        )
        window = await recall_messages.GetContextWindow(
            history_pb2.GetContextWindowRequest(agent_id=agent_id)
        )
        found = await find(recall_messages, agent_id, "puppy Biscuit", top_k=1)
    assert [m.id for m in window.messages] == [stored[-1].id]
    assert found.matches[0].message.id == stored[0].id


async def test_a_new_message_is_found_by_words_before_it_is_embedded(recall_messages: Messages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        await recall_messages.AppendMessages(
            history_pb2.AppendMessagesRequest(
                agent_id=agent_id, run_id="run-1", step=0, messages=[user("The wifi password is hunter2.")]
            )
        )
        found = await find(recall_messages, agent_id, "wifi password", mode=search_pb2.SEARCH_MODE_KEYWORD)
    assert found.matches[0].message.user.text == "The wifi password is hunter2."


async def test_messages_of_another_org_are_never_recalled(
    recall_messages: Messages, embedded_memory: Served
) -> None:
    _, agent_id, _ = await converse(recall_messages, embedded_memory)
    with acting_as(new_actor()):
        found = await find(recall_messages, agent_id, "golden retriever")
    assert list(found.matches) == []


async def test_purged_history_is_not_recalled(recall_messages: Messages, embedded_memory: Served) -> None:
    actor, agent_id, _ = await converse(recall_messages, embedded_memory)
    with acting_as(actor):
        await recall_messages.PurgeAgentMessages(history_pb2.PurgeAgentMessagesRequest(agent_id=agent_id))
        found = await find(recall_messages, agent_id, "golden retriever puppy")
    assert list(found.matches) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x", "top_k": -1}, "top_k"),
        ({"query": "x", "kinds": [99]}, "kinds[0]"),
    ],
)
async def test_bad_recall_search_is_refused(
    recall_messages: Messages, fields: dict[str, object], field: str
) -> None:
    with acting_as(new_actor()), pytest.raises(InvalidArgument) as refused:
        await recall_messages.SearchMessages(
            history_pb2.SearchMessagesRequest(agent_id=new_agent_id(), **fields)
        )
    assert field in [v.field for v in refused.value.violations]


async def test_recall_of_what_is_true_now_prefers_the_newest_message(
    recall_messages: Messages, embedded_memory: Served
) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    said = [
        user("I work at Northwind as a data analyst."),
        user("The weather was awful all week."),
        user("I quit Northwind, I work at Quillion as a designer now."),
    ]
    with acting_as(actor):
        for step, message in enumerate(said):
            await recall_messages.AppendMessages(
                history_pb2.AppendMessagesRequest(
                    agent_id=agent_id, run_id=f"run-{step}", step=0, messages=[message]
                )
            )
        assert await memory_app(embedded_memory).message_embedder.drained(timeout=30)
        now = await find(recall_messages, agent_id, "Where do I work now?", top_k=2)
        before = await find(recall_messages, agent_id, "Where did I work originally?", top_k=2)
    assert now.matches[0].message.user.text == said[2].user.text
    assert before.matches[0].message.user.text == said[0].user.text


async def test_recall_of_a_period_with_nothing_in_it_still_finds_the_best_matches(
    recall_messages: Messages, embedded_memory: Served
) -> None:
    actor, agent_id, _ = await converse(recall_messages, embedded_memory)
    with acting_as(actor):
        found = await find(recall_messages, agent_id, "what did I say about my sister in 2019?", top_k=2)
    assert found.matches[0].message.user.text == CONVERSATION[1][0].user.text


async def _found_by_meaning(messages: Messages, agent_id: str, query: str, text: str) -> bool:
    found = await find(messages, agent_id, query, mode=search_pb2.SEARCH_MODE_VECTOR)
    return any(match.message.user.text == text for match in found.matches)


async def test_a_stored_message_is_found_by_meaning_after_the_embedding_delay_without_any_wait(
    recall_messages: Messages,
) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    text = "My grandmother grows tomatoes in her allotment."
    with acting_as(actor):
        await recall_messages.AppendMessages(
            history_pb2.AppendMessagesRequest(
                agent_id=agent_id, run_id="run-1", step=0, messages=[user(text)]
            )
        )
        # Nobody asks the embedder to finish: the message gets its vector on its own, about GATHER_SECONDS
        # after it was stored (the deadline leaves room for a loaded machine).
        deadline = time.monotonic() + GATHER_SECONDS + 15
        while not await _found_by_meaning(recall_messages, agent_id, "who does gardening?", text):
            assert time.monotonic() < deadline, "the message was never embedded"
            await asyncio.sleep(0.1)


async def test_messages_stored_just_before_a_restart_are_embedded_after_it(
    tmp_path: Path, llm_service: Served
) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    text = "The spare key is under the blue flowerpot."
    async with memory_with_llm(tmp_path, llm_service.address) as served:
        # As if the process died between the append and the embedder's next batch.
        await memory_app(served).message_embedder.stop()
        messages = served.stub(message_pb2_grpc.MessageServiceStub)
        with acting_as(actor):
            await messages.AppendMessages(
                history_pb2.AppendMessagesRequest(
                    agent_id=agent_id, run_id="run-1", step=0, messages=[user(text)]
                )
            )
            found = await find(messages, agent_id, "spare key", mode=search_pb2.SEARCH_MODE_KEYWORD)
            assert found.pending_embeddings == 1
            assert found.matches[0].message.user.text == text
    async with memory_with_llm(tmp_path, llm_service.address) as served:
        messages = served.stub(message_pb2_grpc.MessageServiceStub)
        assert await memory_app(served).message_embedder.drained(timeout=30)
        with acting_as(actor):
            assert await _found_by_meaning(messages, agent_id, "where can I find the key?", text)
            assert (await find(messages, agent_id, "spare key")).pending_embeddings == 0
