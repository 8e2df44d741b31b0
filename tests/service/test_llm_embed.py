"""LlmService.Embed over real gRPC, with the bundled all-MiniLM-L6-v2 model running in the server process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.channels import mesh_channel, mesh_stub
from mnemo_core.errors import FailedPrecondition, InvalidArgument, NotFound
from mnemo_core.server import start_server
from mnemo_llm.app import build
from mnemo_llm.settings import LlmSettings
from tests.fakes.llm_provider import EMBEDDING_DIMENSION, FakeProvider, fake_embedding
from tests.fakes.ollama_provider import FakeOllama
from tests.fakes.ollama_provider import fake_embedding as ollama_embedding
from tests.service.conftest import TEST_CREDENTIAL, clean_environment, serving

if TYPE_CHECKING:
    from mnemo.llm.v1.llm_pb2_grpc import LlmServiceAsyncStub as Llm

MODEL = "local/all-minilm-l6-v2"
ACTOR = Actor("org-1", "user-1")


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Llm, int]]:
    """The llm-gateway app on a free loopback port (no chat provider), and a stub to it."""
    settings = LlmSettings(
        home=tmp_path_factory.mktemp("llm-embed"),
        openai_api_key=None,
        openai_base_url="",
        default_embedding_model=MODEL,
    )
    app = await build(settings)
    running = await start_server(app, host="127.0.0.1", port=0, credential=TEST_CREDENTIAL)
    channel = mesh_channel(f"127.0.0.1:{running.port}")
    try:
        yield mesh_stub(llm_pb2_grpc.LlmServiceStub, channel, TEST_CREDENTIAL), running.port
    finally:
        await channel.close()
        await running.stop(0)
        await app.aclose()


@pytest.fixture
def llm(served: tuple[Llm, int]) -> Llm:
    return served[0]


async def embed(llm: Llm, inputs: list[str], model: str = "") -> llm_pb2.EmbedResponse:
    with acting_as(ACTOR):
        return await llm.Embed(llm_pb2.EmbedRequest(model=model, inputs=inputs, agent_id="agent-1"))


def vectors(response: llm_pb2.EmbedResponse) -> np.ndarray:
    return np.array([list(e.values) for e in response.embeddings], dtype=np.float32)


async def test_embed_returns_one_384d_unit_vector_per_input_in_input_order(llm: Llm) -> None:
    inputs = ["The cat sits on the mat", "Quarterly tax filing deadlines", "A cat is sitting on a rug"]

    response = await embed(llm, inputs, model=MODEL)

    assert response.model == MODEL
    assert response.dimension == 384
    got = vectors(response)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([vectors(await embed(llm, [text])) for text in inputs])
    np.testing.assert_allclose(got, alone, atol=1e-5)


async def test_empty_model_means_the_default_local_model(llm: Llm) -> None:
    response = await embed(llm, ["hello"], model="")

    assert response.model == MODEL
    assert response.dimension == 384


async def test_paraphrases_score_higher_than_unrelated_texts(llm: Llm) -> None:
    cat, paraphrase, taxes = vectors(
        await embed(
            llm, ["The cat sits on the mat", "A cat is sitting on a rug", "Quarterly tax filing deadlines"]
        )
    )

    assert float(cat @ paraphrase) > 0.5
    assert float(cat @ paraphrase) > float(cat @ taxes) + 0.3
    assert float(paraphrase @ taxes) < 0.3


async def test_identical_inputs_in_one_request_get_bit_identical_vectors(llm: Llm) -> None:
    # 40 other texts of the same token length put the two copies in different batches of 32.
    others = [f"other words {i:02d}" for i in range(40)]
    got = vectors(await embed(llm, ["same words 00", *others, "same words 00", "other words 07"]))

    np.testing.assert_array_equal(got[0], got[41])
    np.testing.assert_array_equal(got[8], got[42])


async def test_identical_inputs_across_requests_agree_to_float32_rounding(llm: Llm) -> None:
    first = vectors(await embed(llm, ["same words", "other words", "a longer text in the same batch"]))
    again = vectors(await embed(llm, ["same words"]))

    # Batch shape changes the BLAS kernels, so bits may differ in the 7th decimal, never more.
    assert float(first[0] @ again[0]) >= 1 - 1e-6
    np.testing.assert_allclose(first[0], again[0], atol=1e-6)


async def test_a_batch_of_70_mixed_length_inputs_equals_embedding_each_alone(llm: Llm) -> None:
    inputs = [
        f"memory item {i}: " + f"the agent noted something about topic {i % 7}. " * (i % 9 + 1)
        for i in range(70)
    ]

    together = vectors(await embed(llm, inputs))
    alone = [vectors(r)[0] for r in await asyncio.gather(*(embed(llm, [text]) for text in inputs))]

    np.testing.assert_allclose(together, np.stack(alone), atol=1e-5)


async def test_usage_counts_the_tokens_processed_and_long_inputs_are_cut_at_256_tokens(llm: Llm) -> None:
    short = await embed(llm, ["hello world"])
    long = await embed(llm, ["hello world", "word " * 5000])

    # [CLS] hello world [SEP]
    assert short.usage.prompt_tokens == 4
    assert long.usage.prompt_tokens == 4 + 256
    assert long.usage.total_tokens == long.usage.prompt_tokens
    assert long.usage.completion_tokens == 0


@pytest.mark.parametrize(
    ("inputs", "fields"),
    [
        ([], ["inputs"]),
        (["fine", "", "also fine", "nul\x00byte"], ["inputs[1]", "inputs[3]"]),
        (["x" * 100_001], ["inputs[0]"]),
        (["a"] * 2049, ["inputs"]),
    ],
    ids=["no-inputs", "empty-and-nul", "too-long", "too-many"],
)
async def test_invalid_inputs_are_rejected_naming_each_bad_input(
    llm: Llm, inputs: list[str], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await embed(llm, inputs)

    assert [v.field for v in caught.value.violations] == fields


async def test_the_largest_valid_request_is_accepted(llm: Llm) -> None:
    response = await embed(llm, ["a"] * 2048)

    assert len(response.embeddings) == 2048


async def test_an_unconfigured_embedding_provider_is_a_failed_precondition(llm: Llm) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await embed(llm, ["hello"], model="openai/text-embedding-3-small")

    assert caught.value.reason == "EMBEDDING_PROVIDER_NOT_CONFIGURED"
    assert caught.value.metadata == {"provider": "openai"}
    assert "local/all-minilm-l6-v2" in caught.value.message


async def test_an_unknown_local_model_is_not_found_and_a_malformed_name_is_invalid(llm: Llm) -> None:
    with pytest.raises(NotFound) as caught:
        await embed(llm, ["hello"], model="local/bge-small")
    assert caught.value.reason == "MODEL_NOT_FOUND"

    with pytest.raises(InvalidArgument) as invalid:
        await embed(llm, ["hello"], model="all-minilm-l6-v2")
    assert [v.field for v in invalid.value.violations] == ["model"]


async def test_the_server_keeps_answering_while_it_embeds(served: tuple[Llm, int]) -> None:
    llm, port = served
    loop = asyncio.get_running_loop()
    # Sixteen different 256-token texts: seconds of work on the embedder's one thread.
    started = loop.time()

    async def embed_timed() -> tuple[llm_pb2.EmbedResponse, float]:
        response = await embed(llm, [f"text {i}: " + "many words here " * 100 for i in range(16)])
        return response, loop.time()

    # The finish time is taken by the task itself: a done-callback may not have run yet when `await slow`
    # returns.
    slow = asyncio.create_task(embed_timed())
    latencies: list[float] = []

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while not slow.done():
            asked = loop.time()
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=60)
            latencies.append(loop.time() - asked)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    response, finished = await slow
    assert len(response.embeddings) == 16
    # Had the model run on the event loop, one health check would have waited for the whole embedding.
    assert len(latencies) >= 3
    assert max(latencies) < (finished - started) / 3


# --- embeddings of configured providers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ollama_fake() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def with_providers(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider, ollama_fake: FakeOllama
) -> AsyncIterator[Llm]:
    """The llm-gateway with OpenAI, Ollama and Anthropic configured (each behind an address of a fake)."""
    home = tmp_path_factory.mktemp("llm-embed-providers")
    with clean_environment(home):
        settings = LlmSettings(
            home=home,
            openai_base_url=fake_provider.base_url,
            openai_api_key="sk-test",
            ollama_base_url=ollama_fake.base_url,
            anthropic_api_key="sk-ant",
            anthropic_base_url="http://127.0.0.1:9",
            provider_max_retries=0,
            local_chat="off",
        )
    app = await build(settings)
    async with serving(app) as served:
        yield served.stub(llm_pb2_grpc.LlmServiceStub)


async def test_openai_embeddings_are_fetched_when_the_model_names_openai(
    with_providers: Llm, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()

    response = await embed(with_providers, ["first text", "second"], model="openai/text-embedding-3-small")

    assert response.model == "openai/text-embedding-3-small"
    assert response.dimension == EMBEDDING_DIMENSION
    np.testing.assert_allclose(
        vectors(response), np.array([fake_embedding("first text"), fake_embedding("second")]), atol=1e-6
    )
    assert response.usage.prompt_tokens == 3
    (sent,) = fake_provider.embedding_requests()
    assert sent == {
        "model": "text-embedding-3-small",
        "input": ["first text", "second"],
        "encoding_format": "float",
    }


async def test_ollama_embeddings_are_fetched_when_the_model_names_ollama(
    with_providers: Llm, ollama_fake: FakeOllama
) -> None:
    response = await embed(with_providers, ["alpha beta"], model="ollama/nomic-embed-text")

    assert response.model == "ollama/nomic-embed-text"
    assert response.dimension == 768
    np.testing.assert_allclose(vectors(response)[0], ollama_embedding("alpha beta", 768), atol=1e-6)


async def test_an_unknown_ollama_embedding_model_is_not_found(with_providers: Llm) -> None:
    with pytest.raises(NotFound) as caught:
        await embed(with_providers, ["hello"], model="ollama/bge-huge")

    assert caught.value.reason == "MODEL_NOT_FOUND"


async def test_a_provider_without_embeddings_is_a_failed_precondition_naming_it(with_providers: Llm) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await embed(with_providers, ["hello"], model="anthropic/claude-sonnet-4-5")

    assert caught.value.reason == "EMBEDDING_PROVIDER_NOT_CONFIGURED"
    assert caught.value.metadata == {"provider": "anthropic"}


async def test_the_local_model_stays_the_default_when_providers_are_configured(with_providers: Llm) -> None:
    response = await embed(with_providers, ["hello"])

    assert response.model == MODEL
    assert response.dimension == 384
