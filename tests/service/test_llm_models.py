"""ListModels and CountTokens over real gRPC, with OpenAI, Anthropic, Ollama and a named
OpenAI-compatible provider behind fakes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import InvalidArgument, NotFound
from mnemo_llm.app import build
from mnemo_llm.settings import LlmSettings, ModelEntry, ProviderConfig
from mnemo_llm.tokens import encoding
from tests.fakes.anthropic_provider import FakeAnthropic
from tests.fakes.llm_provider import FakeProvider
from tests.fakes.ollama_provider import FakeOllama
from tests.service.conftest import clean_environment, serving

if TYPE_CHECKING:
    from mnemo.llm.v1.llm_pb2_grpc import LlmServiceAsyncStub as Llm


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


@pytest.fixture(scope="module")
async def stub(
    tmp_path_factory: pytest.TempPathFactory,
    fake_provider: FakeProvider,
    anthropic_fake: FakeAnthropic,
    ollama_fake: FakeOllama,
) -> AsyncIterator[Llm]:
    home = tmp_path_factory.mktemp("llm-models")
    with clean_environment(home):
        settings = LlmSettings(
            home=home,
            openai_base_url=fake_provider.base_url,
            openai_api_key="sk-test",
            anthropic_base_url=anthropic_fake.base_url,
            anthropic_api_key="sk-ant",
            ollama_base_url=ollama_fake.base_url,
            providers={"vllm": ProviderConfig(kind="openai", base_url=fake_provider.base_url)},
            models={
                "vllm/gpt-test": ModelEntry(context_window=32768),
                "ollama/llama3.2:latest": ModelEntry(context_window=8192),
            },
            local_chat="off",
        )
    async with serving(await build(settings)) as served:
        yield served.stub(llm_pb2_grpc.LlmServiceStub)


def by_name(response: llm_pb2.ListModelsResponse) -> dict[str, llm_pb2.ModelInfo]:
    return {m.name: m for m in response.models}


async def test_catalogue_lists_known_models_of_configured_providers_with_context_windows(
    stub: Llm, actor: Actor
) -> None:
    with acting_as(actor):
        models = by_name(await stub.ListModels(llm_pb2.ListModelsRequest()))

    assert models["openai/gpt-4o-mini"].context_window == 128_000
    assert models["openai/gpt-4o-mini"].max_output_tokens == 16_384
    assert models["anthropic/claude-sonnet-4-5"].context_window == 200_000
    assert models["openai/text-embedding-3-small"].kind == llm_pb2.MODEL_KIND_EMBEDDING
    assert models["openai/text-embedding-3-small"].embedding_dimension == 1536
    assert models["local/all-minilm-l6-v2"].embedding_dimension == 384
    assert models["vllm/gpt-test"].context_window == 32768
    assert not any(m.reported_by_provider for m in models.values())


async def test_provider_reported_models_are_merged_and_the_config_file_wins(stub: Llm, actor: Actor) -> None:
    with acting_as(actor):
        models = by_name(await stub.ListModels(llm_pb2.ListModelsRequest(include_provider_models=True)))

    assert models["ollama/llama3.2:latest"].reported_by_provider
    # Ollama reports 131072; the config file says 8192.
    assert models["ollama/llama3.2:latest"].context_window == 8192
    assert models["ollama/nomic-embed-text:latest"].kind == llm_pb2.MODEL_KIND_EMBEDDING
    assert models["ollama/nomic-embed-text:latest"].context_window == 2048
    assert models["anthropic/claude-sonnet-4-5-20250929"].reported_by_provider
    # A dated snapshot inherits its family's window.
    assert models["anthropic/claude-sonnet-4-5-20250929"].context_window == 200_000
    assert models["vllm/gpt-4o-mini"].reported_by_provider
    assert models["openai/gpt-4o-mini"].reported_by_provider


async def test_listing_one_provider_and_an_unreachable_one(tmp_path: Path, stub: Llm, actor: Actor) -> None:
    with acting_as(actor):
        only_ollama = await stub.ListModels(llm_pb2.ListModelsRequest(provider="ollama"))
        with pytest.raises(NotFound) as unknown:
            await stub.ListModels(llm_pb2.ListModelsRequest(provider="acme"))
    with clean_environment(tmp_path):
        settings = LlmSettings(home=tmp_path, ollama_base_url="http://127.0.0.1:9", local_chat="off")
    async with serving(await build(settings)) as served:
        with acting_as(actor):
            down = await served.stub(llm_pb2_grpc.LlmServiceStub).ListModels(
                llm_pb2.ListModelsRequest(include_provider_models=True)
            )

    assert {m.provider for m in only_ollama.models} == {"ollama"}
    assert unknown.value.reason == "PROVIDER_NOT_FOUND"
    assert list(down.unreachable_providers) == ["ollama"]
    assert [m.name for m in down.models] == ["local/all-minilm-l6-v2"]


def count_request(model: str, *messages: llm_pb2.ChatMessage, **fields: object) -> llm_pb2.CountTokensRequest:
    return llm_pb2.CountTokensRequest(
        chat=llm_pb2.ChatRequest(model=model, messages=list(messages), **fields)
    )


async def test_openai_models_are_counted_exactly_with_tiktoken_and_chat_framing(
    stub: Llm, actor: Actor
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    message = llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text)
    with acting_as(actor):
        counted = await stub.CountTokens(count_request("openai/gpt-4o", message))

    assert counted.exact
    assert counted.method == "tiktoken/o200k_base"
    # 3 per message + the text + 3 priming the reply.
    assert counted.token_count == 3 + len(encoding("o200k_base").encode(text)) + 3
    assert counted.context_window == 128_000


async def test_older_openai_models_use_cl100k(stub: Llm, actor: Actor) -> None:
    message = llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="hello world", name="ada")
    with acting_as(actor):
        counted = await stub.CountTokens(count_request("openai/gpt-4-0613", message))

    assert counted.method == "tiktoken/cl100k_base"
    # hello world = 2 tokens; a name costs 1 + its tokens.
    assert counted.token_count == 3 + 2 + 1 + len(encoding("cl100k_base").encode("ada")) + 3


async def test_other_providers_get_an_estimate_and_tools_make_counts_approximate(
    stub: Llm, actor: Actor
) -> None:
    message = llm_pb2.ChatMessage(
        role=llm_pb2.CHAT_ROLE_ASSISTANT,
        tool_calls=[message_pb2.ToolCall(id="c", name="save", arguments=json.dumps({"x": 1}))],
    )
    tool = llm_pb2.ToolSchema(name="save", description="Saves.", parameters_json='{"type": "object"}')
    with acting_as(actor):
        claude = await stub.CountTokens(count_request("anthropic/claude-sonnet-4-5", message))
        with_tools = await stub.CountTokens(count_request("openai/gpt-4o", message, tools=[tool]))
        without = await stub.CountTokens(count_request("openai/gpt-4o", message))

    assert not claude.exact
    assert claude.method == "estimate/o200k_base"
    assert claude.context_window == 200_000
    assert not with_tools.exact
    assert without.exact
    assert with_tools.token_count > without.token_count


async def test_counting_needs_a_provider_slash_model_name(stub: Llm, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as failed:
        await stub.CountTokens(count_request("gpt-4o"))

    assert [v.field for v in failed.value.violations] == ["chat.model"]


async def test_a_configured_window_runs_the_ollama_model_with_that_num_ctx(
    stub: Llm, ollama_fake: FakeOllama, actor: Actor
) -> None:
    ollama_fake.reset()
    chat = llm_pb2.ChatRequest(
        model="ollama/llama3.2", messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="hi")]
    )
    with acting_as(actor):
        await stub.Chat(chat)

    # The config file says 8192 for ollama/llama3.2:latest; Ollama's own default would be far smaller.
    assert ollama_fake.bodies("/api/chat")[0]["options"] == {"num_ctx": 8192}
