"""LlmService.StreamChat against the fake OpenAI-compatible provider, through the real SDK."""

from __future__ import annotations

import pytest

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import acting_as
from mnemo_core.errors import InvalidArgument
from tests.fakes.llm_provider import FakeProvider, error, reply, tool_calls
from tests.service.conftest import new_actor


def chat_request(text: str) -> llm_pb2.StreamChatRequest:
    return llm_pb2.StreamChatRequest(
        chat=llm_pb2.ChatRequest(
            model="openai/gpt-4o-mini",
            messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text)],
            tools=[llm_pb2.ToolSchema(name="lookup", parameters_json='{"type": "object"}')],
        )
    )


async def test_text_arrives_in_deltas_and_the_whole_reply_comes_last(
    chat: llm_pb2_grpc.LlmServiceAsyncStub, llm: FakeProvider
) -> None:
    llm.script(
        {
            **reply("The answer is forty-two.", prompt_tokens=9, completion_tokens=6),
            "reasoning_content": "Think.",
        }
    )
    with acting_as(new_actor()):
        events = [e async for e in chat.StreamChat(chat_request("question"))]

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "completed"
    deltas = [e.content_delta for e in events if e.WhichOneof("event") == "content_delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == "The answer is forty-two."
    assert [e.reasoning_delta for e in events if e.WhichOneof("event") == "reasoning_delta"] == ["Think."]
    done = events[-1].completed
    assert done.message.content == "The answer is forty-two."
    assert done.message.reasoning == "Think."
    assert done.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (9, 6)
    assert llm.requests()[-1]["stream"] is True


async def test_tool_calls_arrive_whole_before_the_reply(
    chat: llm_pb2_grpc.LlmServiceAsyncStub, llm: FakeProvider
) -> None:
    llm.script(tool_calls([("lookup", {"q": "a"}, "c1"), ("lookup", {"q": "b"}, "c2")]))
    with acting_as(new_actor()):
        events = [e async for e in chat.StreamChat(chat_request("look up two things"))]

    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("c1", "lookup", '{"q": "a"}'),
        ("c2", "lookup", '{"q": "b"}'),
    ]
    done = events[-1].completed
    assert list(done.message.tool_calls) == calls
    assert done.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS


async def test_a_context_overflow_is_reported_like_chat_does(
    chat: llm_pb2_grpc.LlmServiceAsyncStub, llm: FakeProvider
) -> None:
    llm.script(error(400, "maximum context length exceeded", code="context_length_exceeded"))
    with acting_as(new_actor()), pytest.raises(InvalidArgument) as overflow:
        _ = [e async for e in chat.StreamChat(chat_request("too long"))]

    assert overflow.value.reason == "CONTEXT_WINDOW_EXCEEDED"
