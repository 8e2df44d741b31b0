"""Chat batches over real gRPC: the gateway submits many chat requests through the providers' batch APIs
(the real `openai` and `anthropic` SDKs against fakes speaking the Files/Batches and Message Batches wire
formats), polls them, maps the results back in request order and records their usage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import acting_as
from mnemo_core.errors import FailedPrecondition, InvalidArgument, NotFound
from mnemo_llm.app import build
from mnemo_llm.settings import LlmSettings, ProviderConfig
from tests.fakes import anthropic_provider as anthropic_fake
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.llm_provider import FakeProvider, error, reply, tool_call
from tests.service.conftest import clean_environment, new_actor, serving

FINISHED = (
    llm_pb2.CHAT_BATCH_STATE_SUCCEEDED,
    llm_pb2.CHAT_BATCH_STATE_FAILED,
    llm_pb2.CHAT_BATCH_STATE_CANCELLED,
    llm_pb2.CHAT_BATCH_STATE_EXPIRED,
)


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


def settings_for(home: Path, llm: FakeProvider, anthropic_url: str = "") -> LlmSettings:
    with clean_environment(home):
        return LlmSettings(
            home=home,
            openai_base_url=llm.base_url,
            openai_api_key="sk-test",
            openai_batch=True,
            anthropic_base_url=anthropic_url,
            anthropic_api_key="sk-ant-test" if anthropic_url else None,
            providers={"plain": ProviderConfig(kind="openai", base_url=llm.base_url)},
            provider_max_retries=0,
            usage_flush_interval=0.05,
            local_chat="off",
        )


def chat(text: str, *, model: str = "openai/gpt-test", agent_id: str = "agent-1") -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(
        model=model,
        agent_id=agent_id,
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="Be brief."),
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text),
        ],
    )


async def until_finished(stub: llm_pb2_grpc.LlmServiceStub, batch_id: str) -> llm_pb2.ChatBatch:
    for _ in range(20):
        batch = (await stub.GetChatBatch(llm_pb2.GetChatBatchRequest(id=batch_id))).batch
        if batch.state in FINISHED:
            return batch
    raise AssertionError("the batch did not finish")


async def test_openai_batch_uploads_one_jsonl_and_maps_results_back_in_order_with_usage(
    tmp_path: Path, llm: FakeProvider
) -> None:
    llm.script(
        reply("first", prompt_tokens=10, completion_tokens=1),
        tool_call("core_memory_append", {"label": "human", "content": "x"}, call_id="call_9"),
        reply("third", prompt_tokens=30, completion_tokens=3),
    )
    llm.complete_batches_after(2)
    actor = new_actor()
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(actor):
            created = (
                await stub.CreateChatBatch(
                    llm_pb2.CreateChatBatchRequest(
                        requests=[chat("one"), chat("two", agent_id="agent-2"), chat("three")]
                    )
                )
            ).batch
            polled = (await stub.GetChatBatch(llm_pb2.GetChatBatchRequest(id=created.id))).batch
            done = await until_finished(stub, created.id)
            usage = await stub.SummarizeUsage(
                llm_pb2.SummarizeUsageRequest(group_by=[llm_pb2.USAGE_DIMENSION_AGENT])
            )

    assert created.id.startswith("chatbatch-")
    assert created.state == llm_pb2.CHAT_BATCH_STATE_PENDING
    assert created.provider == "openai"
    assert created.provider_batch_id.startswith("batch_")
    assert created.request_count == 3
    assert not created.results
    assert polled.state == llm_pb2.CHAT_BATCH_STATE_RUNNING
    assert llm.uploads() == [{"purpose": "batch", "lines": 3}]
    (made,) = llm.batches()
    assert made["endpoint"] == "/v1/chat/completions"
    assert made["completion_window"] == "24h"
    # The bodies are exactly what Chat would post, one per request, and no plain chat call was made.
    assert [b["messages"][-1]["content"] for b in llm.batch_requests()] == ["one", "two", "three"]
    assert llm.batch_requests()[0] == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one"}],
    }
    assert llm.requests() == []
    assert done.state == llm_pb2.CHAT_BATCH_STATE_SUCCEEDED
    assert (done.succeeded_count, done.failed_count) == (3, 0)
    assert done.HasField("end_time")
    first, second, third = done.results
    assert first.response.message.content == "first"
    assert first.response.usage.total_tokens == 11
    assert second.response.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert second.response.message.tool_calls[0].id == "call_9"
    assert json.loads(second.response.message.tool_calls[0].arguments) == {"label": "human", "content": "x"}
    assert third.response.message.content == "third"
    by_agent = {s.agent_id: (s.request_count, s.usage.prompt_tokens) for s in usage.summaries}
    assert by_agent["agent-1"] == (2, 40)
    assert by_agent["agent-2"][0] == 1


async def test_a_failed_request_inside_a_batch_gets_its_own_error_and_the_others_their_replies(
    tmp_path: Path, llm: FakeProvider
) -> None:
    llm.script(
        reply("fine"),
        error(400, "This model's maximum context length is 10 tokens", code="context_length_exceeded"),
    )
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(new_actor()):
            created = (
                await stub.CreateChatBatch(llm_pb2.CreateChatBatchRequest(requests=[chat("a"), chat("b")]))
            ).batch
            done = await until_finished(stub, created.id)

    assert done.state == llm_pb2.CHAT_BATCH_STATE_SUCCEEDED
    assert (done.succeeded_count, done.failed_count) == (1, 1)
    assert done.results[0].response.message.content == "fine"
    failed = done.results[1].error
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert failed.reason == "CONTEXT_WINDOW_EXCEEDED"
    assert "maximum context length" in failed.message


async def test_anthropic_batch_round_trip_through_message_batches(
    tmp_path: Path, llm: FakeProvider, anthropic: FakeAnthropic
) -> None:
    anthropic.reset()
    anthropic.script(
        anthropic_fake.reply("Hallo", input_tokens=12, output_tokens=2),
        anthropic_fake.error(400, "invalid_request_error", "prompt is too long: 300000 tokens"),
        anthropic_fake.tool_use([("lookup", {"q": "x"}, "toolu_1")]),
    )
    model = "anthropic/claude-sonnet-4-5"
    async with serving(await build(settings_for(tmp_path, llm, anthropic.base_url))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(new_actor()):
            created = (
                await stub.CreateChatBatch(
                    llm_pb2.CreateChatBatchRequest(
                        requests=[chat("a", model=model), chat("b", model=model), chat("c", model=model)]
                    )
                )
            ).batch
            done = await until_finished(stub, created.id)
            usage = await stub.SummarizeUsage(llm_pb2.SummarizeUsageRequest(model=model))

    (submitted,) = anthropic.bodies("/v1/messages/batches")
    assert [r["custom_id"] for r in submitted["requests"]] == ["request-0", "request-1", "request-2"]
    # Each request's params are what Chat sends to /v1/messages: system prompt apart, user turn.
    assert submitted["requests"][0]["params"] == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
    }
    assert anthropic.requests("/v1/messages") == []
    assert created.provider == "anthropic"
    assert created.provider_batch_id.startswith("msgbatch_")
    assert done.state == llm_pb2.CHAT_BATCH_STATE_SUCCEEDED
    first, second, third = done.results
    assert first.response.message.content == "Hallo"
    assert second.error.reason == "CONTEXT_WINDOW_EXCEEDED"
    assert third.response.message.tool_calls[0].name == "lookup"
    (summary,) = usage.summaries
    assert summary.request_count == 2
    assert summary.usage.prompt_tokens == 12 + 10


async def test_a_provider_without_a_batch_api_is_refused_with_failed_precondition(
    tmp_path: Path, llm: FakeProvider
) -> None:
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(new_actor()):
            with pytest.raises(FailedPrecondition) as refused:
                await stub.CreateChatBatch(
                    llm_pb2.CreateChatBatchRequest(requests=[chat("a", model="plain/gpt-test")])
                )
            with pytest.raises(FailedPrecondition) as not_even_validated:
                await stub.CreateChatBatch(
                    llm_pb2.CreateChatBatchRequest(
                        requests=[chat("a", model="plain/gpt-test")], validate_only=True
                    )
                )
            validated = await stub.CreateChatBatch(
                llm_pb2.CreateChatBatchRequest(requests=[chat("a")], validate_only=True)
            )

    assert refused.value.reason == "PROVIDER_BATCH_UNSUPPORTED"
    assert refused.value.metadata == {"provider": "plain"}
    assert not_even_validated.value.reason == "PROVIDER_BATCH_UNSUPPORTED"
    assert validated.batch == llm_pb2.ChatBatch()
    assert llm.uploads() == []
    assert llm.batches() == []


async def test_get_chat_batch_works_after_a_gateway_restart_and_results_are_recorded_once(
    tmp_path: Path, llm: FakeProvider
) -> None:
    llm.script(reply("late", prompt_tokens=7, completion_tokens=1))
    llm.complete_batches_after(1)
    actor = new_actor()
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        with acting_as(actor):
            created = (
                await served.stub(llm_pb2_grpc.LlmServiceStub).CreateChatBatch(
                    llm_pb2.CreateChatBatchRequest(requests=[chat("a")])
                )
            ).batch
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(actor):
            done = await until_finished(stub, created.id)
            again = (await stub.GetChatBatch(llm_pb2.GetChatBatchRequest(id=created.id))).batch
            usage = await stub.SummarizeUsage(llm_pb2.SummarizeUsageRequest())
        with acting_as(new_actor()), pytest.raises(NotFound):
            await stub.GetChatBatch(llm_pb2.GetChatBatchRequest(id=created.id))

    assert done.results[0].response.message.content == "late"
    assert again == done
    (summary,) = usage.summaries
    assert (summary.request_count, summary.usage.prompt_tokens) == (1, 7)
    assert len(llm.batch_requests()) == 1


async def test_cancel_stops_the_batch_and_its_unanswered_requests_end_with_an_error(
    tmp_path: Path, llm: FakeProvider, anthropic: FakeAnthropic
) -> None:
    anthropic.reset()
    llm.complete_batches_after(5)
    anthropic.complete_batches_after(5)
    model = "anthropic/claude-haiku-4-5"
    async with serving(await build(settings_for(tmp_path, llm, anthropic.base_url))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(new_actor()):
            outcomes = []
            for request in (chat("a"), chat("b", model=model)):
                created = (
                    await stub.CreateChatBatch(llm_pb2.CreateChatBatchRequest(requests=[request, request]))
                ).batch
                cancelling = (await stub.CancelChatBatch(llm_pb2.CancelChatBatchRequest(id=created.id))).batch
                outcomes.append((cancelling, await until_finished(stub, created.id)))

    for cancelling, done in outcomes:
        assert cancelling.state == llm_pb2.CHAT_BATCH_STATE_RUNNING
        assert done.state == llm_pb2.CHAT_BATCH_STATE_CANCELLED
        assert [r.error.reason for r in done.results] == ["BATCH_REQUEST_NOT_RUN"] * 2
        assert done.results[0].error.code == grpc.StatusCode.ABORTED.value[0]
    assert llm.batch_requests() == []
    assert anthropic.requests("/v1/messages/batches/requests") == []


async def test_requests_of_two_providers_in_one_batch_are_refused(tmp_path: Path, llm: FakeProvider) -> None:
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(new_actor()), pytest.raises(InvalidArgument) as refused:
            await stub.CreateChatBatch(
                llm_pb2.CreateChatBatchRequest(requests=[chat("a"), chat("b", model="plain/gpt-test")])
            )

    assert refused.value.violations[0].field == "requests[1].model"
