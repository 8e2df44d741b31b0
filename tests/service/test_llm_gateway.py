"""LlmService over real gRPC, against the fake OpenAI-compatible provider over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MnemoError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from mnemo_llm.app import build as build_llm
from mnemo_llm.settings import LlmSettings
from tests.fakes.llm_provider import FakeProvider, error, reply, tool_call, tool_calls
from tests.service.conftest import Served, clean_environment, serving

if TYPE_CHECKING:
    from mnemo.llm.v1.llm_pb2_grpc import LlmServiceAsyncStub as Llm

MODEL = "openai/gpt-test"


def chat_request(text: str = "hello", **fields: Any) -> llm_pb2.ChatRequest:
    request = llm_pb2.ChatRequest(
        model=MODEL,
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="be brief"),
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text),
        ],
    )
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def violation_fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


async def test_text_reply_comes_back_with_usage_finish_reason_and_model(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(reply("Hi there!", prompt_tokens=12, completion_tokens=3))
    with acting_as(actor):
        response = await chat.Chat(chat_request())

    assert response.message.role == llm_pb2.CHAT_ROLE_ASSISTANT
    assert response.message.content == "Hi there!"
    assert list(response.message.tool_calls) == []
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        12,
        3,
        15,
    )
    assert response.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert response.model == "gpt-test"


async def test_tool_calls_of_the_reply_are_parsed_in_order(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(
        tool_calls(
            [
                ("core_memory_append", {"label": "human", "content": "Ada"}, "call_a"),
                ("core_memory_replace", '{"label":"human"}', "call_b"),
            ],
            content="Saving that.",
        )
    )
    with acting_as(actor):
        response = await chat.Chat(chat_request())

    assert response.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert response.message.content == "Saving that."
    assert list(response.message.tool_calls) == [
        message_pb2.ToolCall(
            id="call_a", name="core_memory_append", arguments=json.dumps({"label": "human", "content": "Ada"})
        ),
        message_pb2.ToolCall(id="call_b", name="core_memory_replace", arguments='{"label":"human"}'),
    ]


async def test_reply_with_only_a_tool_call_has_empty_content(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(tool_call("core_memory_append", {"label": "human"}, call_id="call_1"))
    with acting_as(actor):
        response = await chat.Chat(chat_request())

    assert response.message.content == ""
    assert [c.id for c in response.message.tool_calls] == ["call_1"]


async def test_reasoning_content_of_the_provider_is_returned_as_reasoning(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script({"content": "42", "reasoning_content": "six times seven"})
    with acting_as(actor):
        response = await chat.Chat(chat_request())

    assert response.message.content == "42"
    assert response.message.reasoning == "six times seven"


async def test_provider_receives_the_conversation_and_tools_in_openai_format(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    request = llm_pb2.ChatRequest(
        model=MODEL,
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="You remember things."),
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="I am Ada", name="ada"),
            llm_pb2.ChatMessage(
                role=llm_pb2.CHAT_ROLE_ASSISTANT,
                tool_calls=[
                    message_pb2.ToolCall(id="call_1", name="remember", arguments='{"label":"human"}')
                ],
            ),
            llm_pb2.ChatMessage(
                role=llm_pb2.CHAT_ROLE_TOOL, content="saved", tool_call_id="call_1", name="remember"
            ),
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_ASSISTANT, content="Noted."),
        ],
        tools=[
            llm_pb2.ToolSchema(
                name="remember", description="Save a fact.", parameters_json=json.dumps(schema)
            )
        ],
        tool_choice=llm_pb2.TOOL_CHOICE_REQUIRED,
        temperature=0.5,
        max_tokens=64,
        parallel_tool_calls=True,
    )
    with acting_as(actor):
        await chat.Chat(request)

    (sent,) = llm.requests()
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == [
        {"role": "system", "content": "You remember things."},
        {"role": "user", "content": "I am Ada", "name": "ada"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "remember", "arguments": '{"label":"human"}'},
                }
            ],
        },
        {"role": "tool", "content": "saved", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "Noted."},
    ]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "remember", "description": "Save a fact.", "parameters": schema},
        }
    ]
    assert sent["tool_choice"] == "required"
    assert sent["parallel_tool_calls"] is True
    assert sent["temperature"] == 0.5
    assert sent["max_tokens"] == 64


async def test_request_without_tools_or_options_sends_none_of_them(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    with acting_as(actor):
        response = await chat.Chat(chat_request("plain"))

    (sent,) = llm.requests()
    assert response.message.content == "ok"
    assert sent["messages"][-1] == {"role": "user", "content": "plain"}
    for absent in ("tools", "tool_choice", "parallel_tool_calls", "temperature", "max_tokens"):
        assert absent not in sent


@pytest.mark.parametrize(
    ("scripted", "expected", "reason"),
    [
        (
            error(401, "Incorrect API key provided", code="invalid_api_key"),
            PermissionDenied,
            "PROVIDER_AUTH_FAILED",
        ),
        (error(403, "Country not supported"), PermissionDenied, "PROVIDER_PERMISSION_DENIED"),
        (
            error(404, "The model `gpt-test` does not exist", code="model_not_found"),
            NotFound,
            "MODEL_NOT_FOUND",
        ),
        (error(429, "Rate limit reached", err_type="requests"), ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        (error(500, "The server had an error", err_type="server_error"), Unavailable, "PROVIDER_UNAVAILABLE"),
        (error(503, "Overloaded", err_type="server_error"), Unavailable, "PROVIDER_UNAVAILABLE"),
        (
            error(400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"),
            InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (error(400, "Invalid value for 'temperature'"), InvalidArgument, "PROVIDER_BAD_REQUEST"),
    ],
    ids=["401", "403", "404", "429", "500", "503", "400-context", "400-other"],
)
async def test_provider_errors_are_mapped_to_domain_errors_keeping_the_providers_message(
    chat: Llm,
    llm: FakeProvider,
    actor: Actor,
    scripted: dict[str, Any],
    expected: type[MnemoError],
    reason: str,
) -> None:
    llm.script(scripted)
    with acting_as(actor), pytest.raises(expected) as failed:
        await chat.Chat(chat_request())

    assert type(failed.value) is expected
    assert failed.value.reason == reason
    assert scripted["error"]["message"] in failed.value.message
    # No retry with provider_max_retries=0: the provider saw exactly one request.
    assert len(llm.requests()) == 1


async def test_slow_provider_beyond_the_callers_deadline_is_deadline_exceeded(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(reply("too late", delay=2.0))
    started = time.monotonic()
    with acting_as(actor), pytest.raises(DeadlineExceeded):
        await chat.Chat(chat_request(), timeout=0.3)

    assert time.monotonic() - started < 1.5


async def test_slow_provider_beyond_the_provider_timeout_is_deadline_exceeded_provider_timeout(
    tmp_path: Path, llm: FakeProvider, actor: Actor
) -> None:
    with clean_environment(tmp_path):
        settings = LlmSettings(
            home=tmp_path,
            openai_base_url=llm.base_url,
            openai_api_key="sk-test",
            provider_max_retries=0,
            provider_timeout=0.3,
        )
    llm.script(reply("too late", delay=2.0))
    started = time.monotonic()
    async with serving(await build_llm(settings)) as served:
        with acting_as(actor), pytest.raises(DeadlineExceeded) as failed:
            await served.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request(), timeout=10)

    assert failed.value.reason == "PROVIDER_TIMEOUT"
    assert time.monotonic() - started < 1.5


async def test_chat_without_any_configured_provider_is_failed_precondition(
    unconfigured_llm_service: Served, actor: Actor
) -> None:
    stub = unconfigured_llm_service.stub(llm_pb2_grpc.LlmServiceStub)
    with acting_as(actor), pytest.raises(FailedPrecondition) as failed:
        await stub.Chat(chat_request())

    assert failed.value.reason == "LLM_PROVIDER_NOT_CONFIGURED"
    assert "OPENAI_API_KEY" in failed.value.message


async def test_model_of_a_known_but_unconfigured_provider_is_failed_precondition(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(FailedPrecondition) as failed:
        await chat.Chat(chat_request(model="anthropic/claude-x"))

    assert failed.value.reason == "LLM_PROVIDER_NOT_CONFIGURED"
    assert failed.value.metadata == {"provider": "anthropic"}
    assert llm.requests() == []


async def test_model_of_an_unknown_provider_is_not_found(chat: Llm, llm: FakeProvider, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(NotFound) as failed:
        await chat.Chat(chat_request(model="acme/rocket-1"))

    assert failed.value.reason == "PROVIDER_NOT_FOUND"
    assert failed.value.metadata == {"provider": "acme"}
    assert llm.requests() == []


@pytest.mark.parametrize("model", ["", "gpt-4o", "openai/", "/gpt-4o"])
async def test_model_not_named_provider_slash_model_is_invalid_argument(
    chat: Llm, llm: FakeProvider, actor: Actor, model: str
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as failed:
        await chat.Chat(chat_request(model=model))

    assert violation_fields(failed.value) == ["model"]
    assert llm.requests() == []


async def test_provider_prefix_is_case_insensitive_and_the_model_keeps_its_slashes(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    with acting_as(actor):
        await chat.Chat(chat_request(model="OpenAI/meta/llama-3"))

    assert [r["model"] for r in llm.requests()] == ["meta/llama-3"]


async def test_chat_without_messages_is_invalid_argument(chat: Llm, llm: FakeProvider, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as failed:
        await chat.Chat(llm_pb2.ChatRequest(model=MODEL))

    assert violation_fields(failed.value) == ["messages"]
    assert llm.requests() == []


async def test_message_without_a_role_is_invalid_argument_and_nothing_is_sent(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    request = chat_request()
    request.messages.append(llm_pb2.ChatMessage(content="who am I?"))
    with acting_as(actor), pytest.raises(InvalidArgument) as failed:
        await chat.Chat(request)

    assert violation_fields(failed.value) == ["messages[2].role"]
    assert llm.requests() == []


async def test_tool_with_parameters_that_are_not_json_is_invalid_argument_and_nothing_is_sent(
    chat: Llm, llm: FakeProvider, actor: Actor
) -> None:
    request = chat_request()
    request.tools.extend(
        [
            llm_pb2.ToolSchema(name="fine", parameters_json="{}"),
            llm_pb2.ToolSchema(name="broken", parameters_json="{not json"),
        ]
    )
    with acting_as(actor), pytest.raises(InvalidArgument) as failed:
        await chat.Chat(request)

    assert violation_fields(failed.value) == ["tools[1].parameters_json"]
    assert llm.requests() == []


async def test_chat_without_actor_is_unauthenticated(chat: Llm, llm: FakeProvider) -> None:
    with pytest.raises(Unauthenticated):
        await chat.Chat(chat_request())

    assert llm.requests() == []
