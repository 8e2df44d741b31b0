"""The usage ledger over real gRPC: every Chat, StreamChat and Embed is recorded per organization, agent
and model in the gateway's own SQLite schema, and summed on request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.protobuf import timestamp_pb2

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import InvalidArgument
from mnemo_llm.app import build
from mnemo_llm.settings import LlmSettings
from tests.fakes.llm_provider import FakeProvider, reply, streamed
from tests.service.conftest import clean_environment, new_actor, serving


def settings_for(home: Path, llm: FakeProvider) -> LlmSettings:
    with clean_environment(home):
        return LlmSettings(
            home=home,
            openai_base_url=llm.base_url,
            openai_api_key="sk-test",
            provider_max_retries=0,
            usage_flush_interval=0.05,
            local_chat="off",
        )


def chat(agent_id: str, model: str = "openai/gpt-test") -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(
        model=model,
        agent_id=agent_id,
        messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="hi")],
    )


def totals(summary: llm_pb2.UsageSummary) -> tuple[int, int, int, int]:
    return (
        summary.request_count,
        summary.usage.prompt_tokens,
        summary.usage.completion_tokens,
        summary.usage.total_tokens,
    )


async def test_calls_are_summed_per_agent_and_model_for_the_callers_organization_only(
    tmp_path: Path, llm: FakeProvider
) -> None:
    ada, other = new_actor(), new_actor()
    llm.script(
        reply("a", prompt_tokens=10, completion_tokens=2),
        reply("b", prompt_tokens=20, completion_tokens=3),
        streamed(reply("c", prompt_tokens=5, completion_tokens=1)),
        reply("d", prompt_tokens=100, completion_tokens=100),
    )
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(ada):
            await stub.Chat(chat("agent-1"))
            await stub.Chat(chat("agent-1"))
            _ = [e async for e in stub.StreamChat(llm_pb2.StreamChatRequest(chat=chat("agent-2")))]
            await stub.Embed(llm_pb2.EmbedRequest(inputs=["hello world"], agent_id="agent-2"))
        with acting_as(other):
            await stub.Chat(chat("agent-1"))
        with acting_as(ada):
            by_agent_model = await stub.SummarizeUsage(
                llm_pb2.SummarizeUsageRequest(
                    group_by=[llm_pb2.USAGE_DIMENSION_AGENT, llm_pb2.USAGE_DIMENSION_MODEL]
                )
            )
            overall = await stub.SummarizeUsage(llm_pb2.SummarizeUsageRequest())
            agent_two = await stub.SummarizeUsage(llm_pb2.SummarizeUsageRequest(agent_id="agent-2"))

    rows = {(s.agent_id, s.model): totals(s) for s in by_agent_model.summaries}
    assert rows == {
        ("agent-1", "openai/gpt-test"): (2, 30, 5, 35),
        ("agent-2", "openai/gpt-test"): (1, 5, 1, 6),
        # [CLS] hello world [SEP]
        ("agent-2", "local/all-minilm-l6-v2"): (1, 4, 0, 4),
    }
    (everything,) = overall.summaries
    assert totals(everything) == (4, 39, 6, 45)
    (two,) = agent_two.summaries
    assert totals(two) == (2, 9, 1, 10)


async def test_usage_survives_a_restart_of_the_gateway(tmp_path: Path, llm: FakeProvider) -> None:
    actor = new_actor()
    llm.script(reply("a", prompt_tokens=7, completion_tokens=1))
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        with acting_as(actor):
            await served.stub(llm_pb2_grpc.LlmServiceStub).Chat(chat("agent-1"))
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        with acting_as(actor):
            summary = await served.stub(llm_pb2_grpc.LlmServiceStub).SummarizeUsage(
                llm_pb2.SummarizeUsageRequest(group_by=[llm_pb2.USAGE_DIMENSION_MODEL])
            )

    assert [(s.model, totals(s)) for s in summary.summaries] == [("openai/gpt-test", (1, 7, 1, 8))]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'llm.db'}")
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT org_id, agent_id, model, operation FROM usage_entries")
        ).all()
    engine.dispose()
    assert stored == [(actor.org_id, "agent-1", "openai/gpt-test", "chat")]


async def test_usage_is_grouped_by_utc_day_and_filtered_by_time(
    tmp_path: Path, llm: FakeProvider, actor: Actor
) -> None:
    llm.script(reply("a", prompt_tokens=3, completion_tokens=1))
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(actor):
            await stub.Chat(chat("agent-1"))
            by_day = await stub.SummarizeUsage(
                llm_pb2.SummarizeUsageRequest(group_by=[llm_pb2.USAGE_DIMENSION_DAY])
            )
            later = await stub.SummarizeUsage(llm_pb2.SummarizeUsageRequest(start_time=future))
            with pytest.raises(InvalidArgument) as inverted:
                await stub.SummarizeUsage(
                    llm_pb2.SummarizeUsageRequest(
                        start_time=future, end_time=timestamp_pb2.Timestamp(seconds=1)
                    )
                )

    assert [(s.day, totals(s)) for s in by_day.summaries] == [(today, (1, 3, 1, 4))]
    assert list(later.summaries) == []
    assert [v.field for v in inverted.value.violations] == ["end_time"]


async def test_an_organization_without_calls_has_no_usage_rows(tmp_path: Path, llm: FakeProvider) -> None:
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        with acting_as(new_actor()):
            summary = await served.stub(llm_pb2_grpc.LlmServiceStub).SummarizeUsage(
                llm_pb2.SummarizeUsageRequest()
            )

    assert list(summary.summaries) == []


async def test_a_stream_its_caller_abandons_is_recorded_with_estimated_tokens(
    tmp_path: Path, llm: FakeProvider
) -> None:
    actor = new_actor()
    llm.script(streamed(reply("one two three four five six seven eight"), pieces=8, chunk_delay=0.25))
    request = llm_pb2.StreamChatRequest(chat=chat("agent-1"))
    async with serving(await build(settings_for(tmp_path, llm))) as served:
        stub = served.stub(llm_pb2_grpc.LlmServiceStub)
        with acting_as(actor):
            call = stub.StreamChat(request)
            async for event in call:
                if event.HasField("content_delta"):
                    break
            await call.aclose()
            assert await asyncio.to_thread(llm.wait_for_abandoned_stream, 5.0)
            prompt = await stub.CountTokens(llm_pb2.CountTokensRequest(chat=request.chat))
            summaries: list[llm_pb2.UsageSummary] = []
            for _ in range(100):
                summaries = list((await stub.SummarizeUsage(llm_pb2.SummarizeUsageRequest())).summaries)
                if summaries:
                    break
                await asyncio.sleep(0.05)

    (summary,) = summaries
    count, prompt_tokens, completion_tokens, _ = totals(summary)
    assert (count, prompt_tokens) == (1, prompt.token_count)
    # Only what was streamed before the caller left: at least the first word, not the whole reply.
    assert 1 <= completion_tokens < 8
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'llm.db'}")
    with engine.connect() as connection:
        operations = connection.execute(sa.text("SELECT operation FROM usage_entries")).scalars().all()
    engine.dispose()
    assert operations == ["chat_abandoned"]
