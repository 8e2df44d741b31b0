"""The Ollama provider through the official `ollama` client against a fake speaking Ollama's native API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_llm.ollama_provider import OllamaProvider
from tests.fakes.ollama_provider import FakeOllama, error, fake_embedding, reply, stream_error, tool_calls

MODEL = "llama3.2"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


@pytest.fixture
async def provider(fake: FakeOllama) -> AsyncIterator[OllamaProvider]:
    fake.reset()
    client = OllamaProvider(base_url=fake.base_url)
    yield client
    await client.aclose()


def user(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text)


def request(*messages: llm_pb2.ChatMessage, **fields: Any) -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(model=f"ollama/{MODEL}", messages=list(messages), **fields)


async def test_conversation_tools_and_options_are_sent_in_ollamas_format(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    chat = request(
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="be brief"),
        user("weather?"),
        llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            tool_calls=[message_pb2.ToolCall(id="c1", name="weather", arguments='{"city": "Berlin"}')],
        ),
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_TOOL, content="12C", tool_call_id="c1", name="weather"),
        tools=[
            llm_pb2.ToolSchema(name="weather", description="Weather now.", parameters_json=json.dumps(schema))
        ],
        temperature=0.5,
        max_tokens=64,
    )

    await provider.chat(MODEL, chat, time_budget=10)

    body = fake.bodies("/api/chat")[0]
    assert body["model"] == MODEL
    assert body["stream"] is False
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        # The client leaves out the empty content of a message that only calls tools.
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Berlin"}}}],
        },
        {"role": "tool", "content": "12C", "tool_name": "weather"},
    ]
    (tool,) = body["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "weather"
    assert tool["function"]["description"] == "Weather now."
    assert tool["function"]["parameters"]["required"] == ["city"]
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert body["options"] == {"temperature": 0.5, "num_predict": 64}


async def test_tool_choice_none_offers_no_tools(provider: OllamaProvider, fake: FakeOllama) -> None:
    chat = request(user("hi"), tools=[llm_pb2.ToolSchema(name="t")], tool_choice=llm_pb2.TOOL_CHOICE_NONE)

    await provider.chat(MODEL, chat, time_budget=10)

    assert "tools" not in fake.bodies("/api/chat")[0] or not fake.bodies("/api/chat")[0]["tools"]


async def test_reply_text_thinking_and_usage_are_returned(provider: OllamaProvider, fake: FakeOllama) -> None:
    fake.script(reply("Paris.", thinking="capital of France", prompt_eval_count=21, eval_count=3))

    response = await provider.chat(MODEL, request(user("capital?")), time_budget=10)

    assert response.message.content == "Paris."
    assert response.message.reasoning == "capital of France"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        21,
        3,
        24,
    )
    assert response.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert response.model == MODEL


async def test_tool_calls_come_back_with_json_arguments_and_fresh_ids(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    fake.script(tool_calls([("weather", {"city": "Berlin"}), ("weather", {"city": "Paris"})]))

    response = await provider.chat(MODEL, request(user("weather?")), time_budget=10)

    calls = list(response.message.tool_calls)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("weather", {"city": "Berlin"}),
        ("weather", {"city": "Paris"}),
    ]
    assert len({c.id for c in calls}) == 2
    assert all(c.id.startswith("call_") for c in calls)
    assert response.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS


async def test_length_is_reported_when_ollama_stops_at_the_token_limit(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    fake.script(reply("cut sho", done_reason="length"))

    response = await provider.chat(MODEL, request(user("story")), time_budget=10)

    assert response.finish_reason == llm_pb2.FINISH_REASON_LENGTH


async def test_stream_yields_deltas_tool_calls_and_the_reply_with_usage_last(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    item = tool_calls([("weather", {"city": "Berlin"})], text="Looking it up.")
    item["thinking"] = "use the tool"
    fake.script(item)

    events = [e async for e in provider.stream(MODEL, request(user("weather?")), time_budget=10)]

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["reasoning_delta"] + ["content_delta"] * 3 + ["tool_call", "completed"]
    assert "".join(e.content_delta for e in events) == "Looking it up."
    completed = events[-1].completed
    assert completed.message.content == "Looking it up."
    assert completed.message.reasoning == "use the tool"
    assert [c.name for c in completed.message.tool_calls] == ["weather"]
    assert completed.message.tool_calls[0].id == events[-2].tool_call.id
    assert (completed.usage.prompt_tokens, completed.usage.completion_tokens) == (10, 5)
    assert completed.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert fake.bodies("/api/chat")[0]["stream"] is True


async def test_unknown_model_is_not_found_with_ollamas_message(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    with pytest.raises(errors.NotFound) as failed:
        await provider.chat("mistral", request(user("hi")), time_budget=10)

    assert failed.value.reason == "MODEL_NOT_FOUND"
    assert 'model "mistral" not found' in failed.value.message


@pytest.mark.parametrize(
    ("scripted", "expected", "reason"),
    [
        (error(401, "unauthorized"), errors.PermissionDenied, "PROVIDER_AUTH_FAILED"),
        (
            error(400, "the input length exceeds the context length"),
            errors.InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (error(400, "invalid options"), errors.InvalidArgument, "PROVIDER_BAD_REQUEST"),
        (error(429, "too many requests"), errors.ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        (error(500, "llama runner process has terminated"), errors.Unavailable, "PROVIDER_UNAVAILABLE"),
        (error(503, "server busy"), errors.Unavailable, "PROVIDER_UNAVAILABLE"),
    ],
    ids=["401", "400-context", "400-other", "429", "500", "503"],
)
async def test_errors_map_to_domain_errors_with_ollamas_message(
    provider: OllamaProvider,
    fake: FakeOllama,
    scripted: dict[str, Any],
    expected: type[errors.MnemoError],
    reason: str,
) -> None:
    fake.script(scripted)

    with pytest.raises(expected) as failed:
        await provider.chat(MODEL, request(user("hi")), time_budget=10)

    assert failed.value.reason == reason
    assert failed.value.message == f"provider error: {scripted['error']}"


async def test_an_error_line_inside_a_stream_fails_the_stream(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    fake.script(stream_error(2, "llama runner process has terminated"))

    with pytest.raises(errors.Unavailable) as failed:
        _ = [e async for e in provider.stream(MODEL, request(user("hi")), time_budget=10)]

    assert "llama runner process has terminated" in failed.value.message


async def test_unreachable_server_is_unavailable() -> None:
    provider = OllamaProvider(base_url="http://127.0.0.1:9")
    try:
        with pytest.raises(errors.Unavailable) as failed:
            await provider.chat(MODEL, request(user("hi")), time_budget=5)
    finally:
        await provider.aclose()

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"


async def test_slow_server_beyond_the_time_budget_is_provider_timeout(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    fake.script(reply("late", delay=2.0))

    with pytest.raises(errors.DeadlineExceeded) as failed:
        await provider.chat(MODEL, request(user("hi")), time_budget=0.3)

    assert failed.value.reason == "PROVIDER_TIMEOUT"


async def test_closing_a_stream_early_closes_the_request(provider: OllamaProvider, fake: FakeOllama) -> None:
    fake.script(reply("one two three four five six", pieces=6, line_delay=0.2))
    events = provider.stream(MODEL, request(user("hi")), time_budget=10)

    assert (await anext(events)).content_delta
    await events.aclose()  # type: ignore[attr-defined]

    assert fake.wait_for_abandoned_stream()


async def test_listing_reports_each_models_context_window_and_kind(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    models = {m.model: m for m in await provider.list_models(time_budget=10)}

    assert set(models) == {"llama3.2:latest", "nomic-embed-text:latest"}
    assert models["llama3.2:latest"].context_window == 131072
    assert models["llama3.2:latest"].kind == llm_pb2.MODEL_KIND_CHAT
    assert models["nomic-embed-text:latest"].kind == llm_pb2.MODEL_KIND_EMBEDDING
    assert models["nomic-embed-text:latest"].embedding_dimension == 768
    assert [b["model"] for b in fake.bodies("/api/show")] == ["llama3.2:latest", "nomic-embed-text:latest"]


async def test_embeddings_come_from_api_embed_in_input_order(
    provider: OllamaProvider, fake: FakeOllama
) -> None:
    result = await provider.embed("nomic-embed-text", ["alpha beta", "gamma"], time_budget=10)

    assert result.vectors == [fake_embedding("alpha beta", 768), fake_embedding("gamma", 768)]
    assert result.prompt_tokens == 3
    assert fake.bodies("/api/embed") == [{"model": "nomic-embed-text", "input": ["alpha beta", "gamma"]}]
