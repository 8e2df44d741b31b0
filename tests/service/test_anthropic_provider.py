"""The Anthropic provider through the official SDK against a fake speaking the messages API over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_llm.anthropic_provider import DEFAULT_MAX_TOKENS, AnthropicProvider
from mnemo_llm.providers import RETRY_AFTER_KEY
from tests.fakes.anthropic_provider import FakeAnthropic, cut_short, error, reply, stream_error, tool_use

KEY = "sk-ant-test-key"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    fake.reset()
    client = AnthropicProvider(api_key=KEY, base_url=fake.base_url)
    yield client
    await client.aclose()


def user(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text)


def request(*messages: llm_pb2.ChatMessage, **fields: Any) -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(model="anthropic/claude-sonnet-4-5", messages=list(messages), **fields)


async def collect(provider: AnthropicProvider, chat: llm_pb2.ChatRequest) -> list[llm_pb2.StreamChatResponse]:
    return [event async for event in provider.stream("claude-sonnet-4-5", chat, time_budget=10)]


async def test_system_prompt_goes_to_the_system_field_and_the_key_in_the_auth_header(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.script(reply("Hello!"))
    chat = request(
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="You are terse."),
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="Remember things."),
        user("hi"),
    )

    await provider.chat("claude-sonnet-4-5", chat, time_budget=10)

    (sent,) = fake.requests("/v1/messages")
    # This SDK version sends the key as a bearer token.
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["headers"]["anthropic-version"]
    assert sent["body"] == {
        "model": "claude-sonnet-4-5",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "You are terse.\n\nRemember things.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


async def test_tool_calls_and_results_become_tool_use_and_one_merged_tool_result_turn(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = request(
        user("weather in Berlin and Paris?"),
        llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            content="Checking both.",
            tool_calls=[
                message_pb2.ToolCall(id="toolu_1", name="weather", arguments='{"city": "Berlin"}'),
                message_pb2.ToolCall(id="toolu_2", name="weather", arguments='{"city": "Paris"}'),
            ],
        ),
        llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_TOOL, content="12C", tool_call_id="toolu_1", name="weather"
        ),
        llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_TOOL, content="15C", tool_call_id="toolu_2", name="weather"
        ),
        user("thanks"),
        tools=[
            llm_pb2.ToolSchema(name="weather", description="Weather now.", parameters_json=json.dumps(schema))
        ],
        tool_choice=llm_pb2.TOOL_CHOICE_REQUIRED,
        parallel_tool_calls=True,
        temperature=0.2,
        max_tokens=300,
    )

    await provider.chat("claude-sonnet-4-5", chat, time_budget=10)

    body = fake.bodies("/v1/messages")[0]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Berlin and Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Berlin"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "15C"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert body["tools"] == [{"name": "weather", "description": "Weather now.", "input_schema": schema}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": False}
    assert body["temperature"] == pytest.approx(0.2)
    assert body["max_tokens"] == 300


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (llm_pb2.TOOL_CHOICE_AUTO, {"type": "auto", "disable_parallel_tool_use": True}),
        (llm_pb2.TOOL_CHOICE_NONE, {"type": "none"}),
    ],
)
async def test_tool_choice_maps_to_anthropics_forms(
    provider: AnthropicProvider,
    fake: FakeAnthropic,
    choice: llm_pb2.ToolChoice.ValueType,
    wire: dict[str, Any],
) -> None:
    chat = request(user("hi"), tools=[llm_pb2.ToolSchema(name="t")], tool_choice=choice)

    await provider.chat("claude-sonnet-4-5", chat, time_budget=10)

    assert fake.bodies("/v1/messages")[0]["tool_choice"] == wire


async def test_reply_text_thinking_tool_use_and_usage_are_returned(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    item = tool_use(
        [("weather", {"city": "Berlin"}, "toolu_9")], text="Let me look.", input_tokens=40, output_tokens=12
    )
    item["content"].insert(0, {"type": "thinking", "thinking": "need the tool", "signature": "s"})
    fake.script(item)

    response = await provider.chat("claude-sonnet-4-5", request(user("weather?")), time_budget=10)

    assert response.message.content == "Let me look."
    assert response.message.reasoning == "need the tool"
    assert list(response.message.tool_calls) == [
        message_pb2.ToolCall(id="toolu_9", name="weather", arguments='{"city": "Berlin"}')
    ]
    assert response.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        40,
        12,
        52,
    )
    assert response.model == "claude-sonnet-4-5"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", llm_pb2.FINISH_REASON_STOP),
        ("stop_sequence", llm_pb2.FINISH_REASON_STOP),
        ("max_tokens", llm_pb2.FINISH_REASON_LENGTH),
        ("refusal", llm_pb2.FINISH_REASON_CONTENT_FILTER),
    ],
)
async def test_stop_reasons_map_to_finish_reasons(
    provider: AnthropicProvider, fake: FakeAnthropic, stop_reason: str, finish: llm_pb2.FinishReason.ValueType
) -> None:
    fake.script(reply("x", stop_reason=stop_reason))

    response = await provider.chat("claude-sonnet-4-5", request(user("hi")), time_budget=10)

    assert response.finish_reason == finish


async def test_stream_yields_text_deltas_then_each_tool_call_whole_then_the_reply(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    item = tool_use(
        [("weather", {"city": "Berlin"}, "toolu_1"), ("weather", {"city": "Paris"}, "toolu_2")],
        text="Checking the weather for you.",
        input_tokens=30,
        output_tokens=20,
    )
    fake.script(item)

    events = await collect(provider, request(user("weather?")))

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["content_delta"] * 3 + ["tool_call", "tool_call", "completed"]
    assert "".join(e.content_delta for e in events) == "Checking the weather for you."
    assert [e.tool_call for e in events if e.HasField("tool_call")] == [
        message_pb2.ToolCall(id="toolu_1", name="weather", arguments='{"city": "Berlin"}'),
        message_pb2.ToolCall(id="toolu_2", name="weather", arguments='{"city": "Paris"}'),
    ]
    completed = events[-1].completed
    assert completed.message.content == "Checking the weather for you."
    assert len(completed.message.tool_calls) == 2
    assert completed.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert (completed.usage.prompt_tokens, completed.usage.completion_tokens) == (30, 20)
    assert fake.bodies("/v1/messages")[0]["stream"] is True


async def test_stream_passes_thinking_as_reasoning_deltas(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.script(reply("42", thinking="six times seven"))

    events = await collect(provider, request(user("answer?")))

    assert [e.reasoning_delta for e in events if e.HasField("reasoning_delta")] == ["six times seven"]
    assert events[-1].completed.message.reasoning == "six times seven"


@pytest.mark.parametrize(
    ("scripted", "expected", "reason"),
    [
        (
            error(401, "authentication_error", "invalid x-api-key"),
            errors.PermissionDenied,
            "PROVIDER_AUTH_FAILED",
        ),
        (
            error(403, "permission_error", "no access to model"),
            errors.PermissionDenied,
            "PROVIDER_PERMISSION_DENIED",
        ),
        (error(404, "not_found_error", "model: claude-9"), errors.NotFound, "MODEL_NOT_FOUND"),
        (
            error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
            errors.InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (
            error(413, "request_too_large", "Request exceeds the maximum size"),
            errors.InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (
            error(400, "invalid_request_error", "temperature: out of range"),
            errors.InvalidArgument,
            "PROVIDER_BAD_REQUEST",
        ),
        (error(429, "rate_limit_error", "slow down"), errors.ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        (error(529, "overloaded_error", "Overloaded"), errors.Unavailable, "PROVIDER_UNAVAILABLE"),
        (error(500, "api_error", "Internal server error"), errors.Unavailable, "PROVIDER_UNAVAILABLE"),
    ],
    ids=["401", "403", "404", "400-too-long", "413", "400-other", "429", "529", "500"],
)
async def test_errors_map_to_domain_errors_with_the_providers_own_message(
    provider: AnthropicProvider,
    fake: FakeAnthropic,
    scripted: dict[str, Any],
    expected: type[errors.MnemoError],
    reason: str,
) -> None:
    fake.script(scripted)

    with pytest.raises(expected) as failed:
        await provider.chat("claude-sonnet-4-5", request(user("hi")), time_budget=10)

    assert failed.value.reason == reason
    assert failed.value.message == f"provider error: {scripted['error']['message']}"
    assert KEY not in failed.value.message


async def test_rate_limit_carries_the_retry_after_the_provider_asked_for(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.script(error(429, "rate_limit_error", "slow down", headers={"retry-after": "7"}))

    with pytest.raises(errors.ResourceExhausted) as failed:
        await provider.chat("claude-sonnet-4-5", request(user("hi")), time_budget=10)

    assert float(failed.value.metadata[RETRY_AFTER_KEY]) == pytest.approx(7.0)


async def test_an_error_event_inside_a_stream_becomes_the_domain_error_of_its_type(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.script(stream_error(4, "overloaded_error", "Overloaded"))
    seen: list[str] = []

    async def consume() -> None:
        async for event in provider.stream("claude-sonnet-4-5", request(user("hi")), time_budget=10):
            seen.append(event.content_delta)

    with pytest.raises(errors.Unavailable) as failed:
        await consume()

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"
    assert "Overloaded" in failed.value.message
    assert seen
    assert "".join(seen) != "partial answer that never ends"


@pytest.mark.parametrize("drop", [True, False], ids=["connection dropped", "stream ended early"])
async def test_a_stream_cut_short_is_a_retryable_error_not_a_shorter_answer(
    provider: AnthropicProvider, fake: FakeAnthropic, drop: bool
) -> None:
    # After message_start, ping, the text block's start and two of its five deltas.
    fake.script(cut_short(5, drop=drop))
    seen: list[llm_pb2.StreamChatResponse] = []

    async def consume() -> None:
        async for event in provider.stream("claude-sonnet-4-5", request(user("hi")), time_budget=10):
            seen.append(event)

    with pytest.raises(errors.Unavailable) as failed:
        await consume()

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"
    assert [e.content_delta for e in seen if e.content_delta]
    assert not [e for e in seen if e.HasField("completed")]


async def test_an_answer_body_cut_short_is_a_retryable_error(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.script(cut_short(0, drop=False))

    with pytest.raises(errors.Unavailable) as failed:
        await provider.chat("claude-sonnet-4-5", request(user("hi")), time_budget=10)

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"
    assert "not valid JSON" in failed.value.message


async def test_slow_provider_beyond_the_time_budget_is_provider_timeout(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.script(reply("late", delay=2.0))

    with pytest.raises(errors.DeadlineExceeded) as failed:
        await provider.chat("claude-sonnet-4-5", request(user("hi")), time_budget=0.3)

    assert failed.value.reason == "PROVIDER_TIMEOUT"


async def test_closing_a_stream_early_closes_the_provider_request(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    fake.script(reply("one two three four five six", pieces=6, event_delay=0.2))
    events = provider.stream("claude-sonnet-4-5", request(user("hi")), time_budget=10)

    first = await anext(events)
    while not first.content_delta:
        first = await anext(events)
    await events.aclose()  # type: ignore[attr-defined]

    assert fake.wait_for_abandoned_stream()


async def test_models_are_listed_from_the_models_endpoint(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    models = await provider.list_models(time_budget=10)

    assert [m.model for m in models] == ["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]
    assert fake.requests("/v1/models")[0]["headers"]["authorization"] == f"Bearer {KEY}"


async def test_tool_arguments_in_history_that_are_not_json_are_sent_wrapped_not_refused(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    chat = request(
        user("go"),
        llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            tool_calls=[message_pb2.ToolCall(id="toolu_1", name="save", arguments="{not json")],
        ),
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_TOOL, content="error: not JSON", tool_call_id="toolu_1"),
    )

    await provider.chat("claude-sonnet-4-5", chat, time_budget=10)

    assistant = fake.bodies("/v1/messages")[0]["messages"][1]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "save", "input": {"_raw_arguments": "{not json"}}
    ]
