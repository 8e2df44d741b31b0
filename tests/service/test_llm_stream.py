"""LlmService.StreamChat over real gRPC, against the fake OpenAI-compatible provider streaming over HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import TYPE_CHECKING

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tests.fakes.llm_provider import FakeProvider, error, reply, streamed, tool_calls
from tests.service.conftest import Served

if TYPE_CHECKING:
    from mnemo.llm.v1.llm_pb2_grpc import LlmServiceAsyncStub as Llm

MODEL = "openai/gpt-test"


def stream_request(text: str = "hello", model: str = MODEL) -> llm_pb2.StreamChatRequest:
    return llm_pb2.StreamChatRequest(
        chat=llm_pb2.ChatRequest(
            model=model,
            agent_id="agent-stream",
            messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text)],
        )
    )


async def events_of(chat: Llm, request: llm_pb2.StreamChatRequest) -> list[llm_pb2.StreamChatResponse]:
    return [event async for event in chat.StreamChat(request)]


async def test_text_arrives_as_deltas_and_the_whole_reply_comes_last(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(streamed(reply("The quick brown fox.", prompt_tokens=9, completion_tokens=5), pieces=4))
    with acting_as(actor):
        events = await events_of(chat, stream_request())

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["content_delta"] * 4 + ["completed"]
    assert "".join(e.content_delta for e in events) == "The quick brown fox."
    completed = events[-1].completed
    assert completed.message.role == llm_pb2.CHAT_ROLE_ASSISTANT
    assert completed.message.content == "The quick brown fox."
    assert completed.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert (
        completed.usage.prompt_tokens,
        completed.usage.completion_tokens,
        completed.usage.total_tokens,
    ) == (
        9,
        5,
        14,
    )
    (sent,) = llm.requests()
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_parallel_tool_call_fragments_are_assembled_into_complete_calls(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(
        tool_calls(
            [
                ("core_memory_append", {"label": "human", "content": "Ada"}, "call_a"),
                ("archival_memory_search", {"query": "cats"}, "call_b"),
            ],
            content="Noting.",
        )
    )
    with acting_as(actor):
        events = await events_of(chat, stream_request())

    calls = [e.tool_call for e in events if e.HasField("tool_call")]
    assert calls == [
        message_pb2.ToolCall(
            id="call_a", name="core_memory_append", arguments=json.dumps({"label": "human", "content": "Ada"})
        ),
        message_pb2.ToolCall(
            id="call_b", name="archival_memory_search", arguments=json.dumps({"query": "cats"})
        ),
    ]
    completed = events[-1].completed
    assert list(completed.message.tool_calls) == calls
    assert completed.message.content == "Noting."
    assert completed.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS


async def test_reasoning_of_compatible_servers_streams_as_reasoning_deltas(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script({"content": "42", "reasoning_content": "six times seven"})
    with acting_as(actor):
        events = await events_of(chat, stream_request())

    assert [e.reasoning_delta for e in events if e.HasField("reasoning_delta")] == ["six times seven"]
    assert events[-1].completed.message.reasoning == "six times seven"


async def test_the_streamed_reply_equals_what_chat_returns_for_the_same_script(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    scripted = tool_calls([("send_message", {"message": "hi"}, "call_1")], content="Sure.", prompt_tokens=3)
    llm.script(scripted, scripted)
    with acting_as(actor):
        events = await events_of(chat, stream_request())
        whole = await chat.Chat(stream_request().chat)

    completed = events[-1].completed
    assert completed.message == whole.message
    assert completed.finish_reason == whole.finish_reason
    assert completed.usage.prompt_tokens == whole.usage.prompt_tokens


async def test_deltas_reach_the_caller_as_the_provider_sends_them(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(streamed(reply("a b c d"), pieces=4, chunk_delay=0.3))
    arrivals: list[float] = []
    with acting_as(actor):
        async for event in chat.StreamChat(stream_request()):
            if event.HasField("content_delta"):
                arrivals.append(time.monotonic())

    assert len(arrivals) == 4
    # Not buffered until the end: each delta arrives about one provider pause after the previous one.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.15


async def test_a_caller_that_goes_away_closes_the_provider_request(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(streamed(reply("one two three four five six seven eight"), pieces=8, chunk_delay=0.25))
    with acting_as(actor):
        call = chat.StreamChat(stream_request())
        async for event in call:
            if event.HasField("content_delta"):
                break
        await call.aclose()

    assert await asyncio.to_thread(llm.wait_for_abandoned_stream, 5.0)
    assert llm.stream_counts()[0] == 0


@pytest.mark.parametrize(
    ("scripted", "expected", "reason"),
    [
        (error(401, "Incorrect API key provided"), PermissionDenied, "PROVIDER_AUTH_FAILED"),
        (error(404, "The model does not exist"), NotFound, "MODEL_NOT_FOUND"),
        (
            error(400, "maximum context length is 8192 tokens", code="context_length_exceeded"),
            InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
    ],
    ids=["401", "404", "context"],
)
async def test_provider_errors_end_the_stream_with_the_mapped_status(
    chat: Llm,
    llm: FakeProvider,
    actor: Actor,
    scripted: dict[str, object],
    expected: type[Exception],
    reason: str,
) -> None:
    llm.script(scripted)
    with acting_as(actor), pytest.raises(expected) as failed:
        await events_of(chat, stream_request())

    assert getattr(failed.value, "reason", None) == reason


async def test_stream_without_messages_or_with_a_bad_model_is_refused_before_any_provider_call(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    with acting_as(actor):
        with pytest.raises(InvalidArgument) as empty:
            await events_of(chat, llm_pb2.StreamChatRequest(chat=llm_pb2.ChatRequest(model=MODEL)))
        with pytest.raises(InvalidArgument) as unnamed:
            await events_of(chat, stream_request(model="gpt-test"))
        with pytest.raises(FailedPrecondition) as unconfigured:
            await events_of(chat, stream_request(model="anthropic/claude"))

    assert [v.field for v in empty.value.violations] == ["chat.messages"]
    assert [v.field for v in unnamed.value.violations] == ["chat.model"]
    assert unconfigured.value.reason == "LLM_PROVIDER_NOT_CONFIGURED"
    assert llm.requests() == []


async def test_stream_on_a_server_without_providers_is_failed_precondition(
    unconfigured_llm_service: Served, actor: Actor
) -> None:
    stub = unconfigured_llm_service.stub(llm_pb2_grpc.LlmServiceStub)
    with acting_as(actor), pytest.raises(FailedPrecondition) as failed:
        await events_of(stub, stream_request())

    assert failed.value.reason == "LLM_PROVIDER_NOT_CONFIGURED"
