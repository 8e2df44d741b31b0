"""Retries of provider requests over real gRPC and HTTP: backoff on 429 / 5xx / timeouts, Retry-After
honoured, the caller's deadline bounding everything, and no retry of what cannot succeed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from mnemo_llm.app import build
from mnemo_llm.settings import LlmSettings, ProviderConfig
from tests.fakes.anthropic_provider import FakeAnthropic, cut_short
from tests.fakes.anthropic_provider import error as anthropic_error
from tests.fakes.anthropic_provider import reply as anthropic_reply
from tests.fakes.llm_provider import FakeProvider, error, reply, streamed
from tests.fakes.ollama_provider import FakeOllama
from tests.fakes.ollama_provider import error as ollama_error
from tests.fakes.ollama_provider import reply as ollama_reply
from tests.service.conftest import Served, clean_environment, serving


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ollama_fake() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


@pytest.fixture
async def retrying(
    tmp_path: Path, llm: FakeProvider, anthropic_fake: FakeAnthropic, ollama_fake: FakeOllama
) -> AsyncIterator[Served]:
    """An llm-gateway retrying twice with short backoff, on all three kinds of provider."""
    anthropic_fake.reset()
    ollama_fake.reset()
    with clean_environment(tmp_path):
        settings = LlmSettings(
            home=tmp_path,
            openai_base_url=llm.base_url,
            openai_api_key="sk-test",
            providers={
                "claude": ProviderConfig(
                    kind="anthropic", base_url=anthropic_fake.base_url, api_key="sk-ant"
                ),
                "ollama": ProviderConfig(kind="ollama", base_url=ollama_fake.base_url),
            },
            provider_max_retries=2,
            provider_retry_initial_delay=0.05,
            provider_retry_max_delay=0.2,
            provider_timeout=5.0,
            local_chat="off",
        )
    async with serving(await build(settings)) as served:
        yield served


def chat_request(model: str = "openai/gpt-test") -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(
        model=model, messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="hi")]
    )


async def test_rate_limit_and_server_errors_are_retried_until_the_provider_answers(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(
        error(429, "Rate limit reached", err_type="requests"), error(503, "Overloaded"), reply("finally")
    )
    with acting_as(actor):
        response = await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request())

    assert response.message.content == "finally"
    assert len(llm.requests()) == 3


async def test_a_provider_that_keeps_failing_fails_after_the_last_retry_with_its_error(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(*[error(500, "The server had an error", err_type="server_error")] * 4)
    with acting_as(actor), pytest.raises(Unavailable) as failed:
        await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request())

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"
    assert "The server had an error" in failed.value.message
    assert len(llm.requests()) == 3


@pytest.mark.parametrize(
    ("scripted", "expected"),
    [
        (error(401, "Incorrect API key provided"), PermissionDenied),
        (
            error(400, "maximum context length is 8192 tokens", code="context_length_exceeded"),
            InvalidArgument,
        ),
    ],
    ids=["auth", "context"],
)
async def test_failures_a_retry_cannot_fix_are_not_retried(
    retrying: Served, llm: FakeProvider, actor: Actor, scripted: dict[str, object], expected: type[Exception]
) -> None:
    llm.script(scripted, reply("never reached"))
    with acting_as(actor), pytest.raises(expected):
        await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request())

    assert len(llm.requests()) == 1


async def test_retry_after_of_a_rate_limit_is_waited_for(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(error(429, "Rate limit reached", headers={"retry-after": "1"}), reply("after the wait"))
    started = time.monotonic()
    with acting_as(actor):
        response = await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request())

    assert response.message.content == "after the wait"
    assert time.monotonic() - started >= 1.0


async def test_a_retry_after_beyond_the_callers_deadline_fails_at_once_with_the_rate_limit(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(error(429, "Rate limit reached", headers={"retry-after": "30"}), reply("too late"))
    started = time.monotonic()
    with acting_as(actor), pytest.raises(ResourceExhausted) as failed:
        await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request(), timeout=3)

    assert time.monotonic() - started < 1.5
    assert failed.value.reason == "PROVIDER_RATE_LIMITED"
    assert failed.value.metadata["retry_after_seconds"] == "30.000"
    assert len(llm.requests()) == 1


async def test_timeouts_are_retried_within_the_callers_deadline_and_no_longer(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(*[reply("slow", delay=3.0)] * 3)
    started = time.monotonic()
    with acting_as(actor), pytest.raises(DeadlineExceeded):
        await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request(), timeout=1.0)

    assert time.monotonic() - started < 1.6


async def test_a_stream_is_retried_when_it_fails_before_its_first_event(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(error(503, "Overloaded"), streamed(reply("streamed at last"), pieces=2))
    with acting_as(actor):
        events = [
            e
            async for e in retrying.stub(llm_pb2_grpc.LlmServiceStub).StreamChat(
                llm_pb2.StreamChatRequest(chat=chat_request())
            )
        ]

    assert "".join(e.content_delta for e in events) == "streamed at last"
    assert len(llm.requests()) == 2


async def test_an_answer_cut_short_is_retried_and_then_fails_as_unavailable_not_as_internal(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    llm.inject_faults(truncate=1.0)
    with acting_as(actor), pytest.raises(Unavailable) as failed:
        await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request())

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"
    assert "not valid JSON" in failed.value.message
    assert llm.injected() == {"truncate": 3}


async def _stream_events(served: Served) -> list[llm_pb2.StreamChatResponse]:
    return [
        event
        async for event in served.stub(llm_pb2_grpc.LlmServiceStub).StreamChat(
            llm_pb2.StreamChatRequest(chat=chat_request())
        )
    ]


async def test_a_stream_cut_short_is_an_error_not_a_shorter_answer(
    retrying: Served, llm: FakeProvider, actor: Actor
) -> None:
    # The first cut drops the connection; the second ends the stream cleanly, without a finish reason.
    llm.inject_faults(truncate=1.0)
    for _ in ("dropped", "ended early"):
        with acting_as(actor), pytest.raises(Unavailable) as failed:
            await _stream_events(retrying)

        assert failed.value.reason == "PROVIDER_UNAVAILABLE"
    assert llm.injected() == {"truncate": 2}


async def test_anthropic_overload_is_retried(
    retrying: Served, anthropic_fake: FakeAnthropic, actor: Actor
) -> None:
    anthropic_fake.script(
        anthropic_error(529, "overloaded_error", "Overloaded"), anthropic_reply("hello from claude")
    )
    with acting_as(actor):
        response = await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(
            chat_request("claude/claude-sonnet-4-5")
        )

    assert response.message.content == "hello from claude"
    assert len(anthropic_fake.requests("/v1/messages")) == 2


async def test_an_anthropic_answer_cut_short_is_retried_and_only_the_whole_one_is_returned(
    retrying: Served, anthropic_fake: FakeAnthropic, actor: Actor
) -> None:
    anthropic_fake.script(cut_short(0, drop=False), anthropic_reply("the whole answer"))
    with acting_as(actor):
        response = await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(
            chat_request("claude/claude-sonnet-4-5")
        )

    assert response.message.content == "the whole answer"
    assert len(anthropic_fake.requests("/v1/messages")) == 2


@pytest.mark.parametrize("drop", [True, False], ids=["connection dropped", "stream ended early"])
async def test_an_anthropic_stream_cut_short_is_a_retryable_error_not_a_shorter_answer(
    retrying: Served, anthropic_fake: FakeAnthropic, actor: Actor, drop: bool
) -> None:
    anthropic_fake.script(cut_short(5, drop=drop))
    events: list[llm_pb2.StreamChatResponse] = []

    async def consume() -> None:
        async for event in retrying.stub(llm_pb2_grpc.LlmServiceStub).StreamChat(
            llm_pb2.StreamChatRequest(chat=chat_request("claude/claude-sonnet-4-5"))
        ):
            events.append(event)

    with acting_as(actor), pytest.raises(Unavailable) as failed:
        await consume()

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"
    assert [e.content_delta for e in events if e.content_delta]
    assert not [e for e in events if e.HasField("completed")]


async def test_ollama_server_errors_are_retried(
    retrying: Served, ollama_fake: FakeOllama, actor: Actor
) -> None:
    ollama_fake.script(ollama_error(503, "server busy"), ollama_reply("hello from ollama"))
    with acting_as(actor):
        response = await retrying.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat_request("ollama/llama3.2"))

    assert response.message.content == "hello from ollama"
    assert len(ollama_fake.requests("/api/chat")) == 2
