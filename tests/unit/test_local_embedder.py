"""The NumPy all-MiniLM-L6-v2 embedder, without gRPC."""

from __future__ import annotations

import asyncio
import json
import math
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mnemo_core.errors import FailedPrecondition
from mnemo_llm.embeddings import LocalEmbedder
from mnemo_llm.minilm import DIMENSION, MiniLM, _gelu_, bundled_model_dir
from mnemo_llm.onnx_encoder import available as onnx_available

SENTENCES = [
    "The cat sits on the mat",
    "Quarterly tax filing deadlines",
    "A cat is sitting on a rug",
    "The agent stored memory item number 7 about topic 7.",
    "short",
    "A much longer sentence that goes on for a while, so that it lands in another batch than the short ones.",
]


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM(bundled_model_dir())


@pytest.fixture
def embedder() -> Iterator[LocalEmbedder]:
    local = LocalEmbedder()
    yield local
    local.close()


def test_the_model_ships_in_the_wheel_with_its_tokenizer() -> None:
    model_dir = bundled_model_dir()

    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "tokenizer.json").is_file()


def test_vectors_are_384d_unit_length_rows_in_input_order(model: MiniLM) -> None:
    result = model.encode(SENTENCES)

    assert result.vectors.shape == (len(SENTENCES), DIMENSION)
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(SENTENCES):
        np.testing.assert_allclose(result.vectors[i], model.encode([text]).vectors[0], atol=1e-5)


def test_batch_size_and_padding_do_not_change_the_vectors(model: MiniLM) -> None:
    texts = [f"note {i}: " + "words about the weather " * (i % 11) for i in range(40)]

    by_one = model.encode(texts, batch_size=1).vectors

    np.testing.assert_allclose(model.encode(texts, batch_size=32).vectors, by_one, atol=1e-5)
    np.testing.assert_allclose(model.encode(texts, batch_size=7).vectors, by_one, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(model: MiniLM) -> None:
    cat, taxes, paraphrase = model.encode(SENTENCES[:3]).vectors

    assert float(cat @ paraphrase) > float(cat @ taxes) + 0.3


def test_token_count_includes_special_tokens_and_stops_at_256_per_input(model: MiniLM) -> None:
    assert model.encode(["hello world"]).token_count == 4
    assert model.encode(["hello world", "word " * 1000]).token_count == 4 + 256


def test_text_past_256_tokens_does_not_change_the_vector(model: MiniLM) -> None:
    head = "the quick brown fox jumps over the lazy dog " * 40

    cut, longer = model.encode([head, head + "and then something else entirely " * 50]).vectors

    np.testing.assert_allclose(cut, longer, atol=1e-6)


def test_gelu_is_the_erf_form_to_float32_precision() -> None:
    x = np.concatenate([np.linspace(-12, 12, 4001), np.random.default_rng(0).normal(0, 3, 10_000)])
    expected = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])

    got = _gelu_(x.astype(np.float32))

    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


async def test_embedder_answers_concurrent_calls_off_the_event_loop(
    embedder: LocalEmbedder, model: MiniLM
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    running = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*(embedder.embed([text]) for text in SENTENCES))
    finally:
        running.cancel()

    for text, result in zip(SENTENCES, results, strict=True):
        np.testing.assert_allclose(result.vectors[0], model.encode([text]).vectors[0], atol=1e-5)
    # The loop kept turning while the model loaded and ran.
    assert ticks > 10


async def test_a_missing_model_is_a_failed_precondition_not_a_crash(tmp_path: Path) -> None:
    broken = LocalEmbedder(model_dir=tmp_path)
    try:
        with pytest.raises(FailedPrecondition) as caught:
            await broken.embed(["hello"])
    finally:
        broken.close()

    assert caught.value.reason == "EMBEDDING_MODEL_UNAVAILABLE"


def test_vectors_match_the_sentence_transformers_reference_to_1e_4(model: MiniLM) -> None:
    # Computed once with sentence-transformers + torch on CPU (see the fixture's "computed_with").
    reference = json.loads((Path(__file__).parents[1] / "fixtures" / "minilm_reference.json").read_text())

    got = model.encode(reference["sentences"]).vectors

    expected = np.array(reference["vectors"], dtype=np.float32)
    assert got.shape == expected.shape == (len(reference["sentences"]), DIMENSION)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.skipif(not onnx_available(), reason="needs the `onnx` extra")
def test_the_onnx_runtime_encoder_matches_the_reference_and_the_numpy_encoder(model: MiniLM) -> None:
    from mnemo_llm.onnx_encoder import OnnxEncoder

    reference = json.loads((Path(__file__).parents[1] / "fixtures" / "minilm_reference.json").read_text())
    onnx_model = MiniLM(bundled_model_dir(), encoder=OnnxEncoder)

    got = onnx_model.encode(reference["sentences"]).vectors

    np.testing.assert_allclose(got, np.array(reference["vectors"], dtype=np.float32), atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        onnx_model.encode(SENTENCES).vectors, model.encode(SENTENCES).vectors, atol=1e-5, rtol=0
    )


@pytest.mark.skipif(not onnx_available(), reason="needs the `onnx` extra")
async def test_the_embedder_runs_the_onnx_encoder_when_configured() -> None:
    local = LocalEmbedder(encoder="onnx")
    try:
        result = await local.embed(["The cat sits on the mat"])
    finally:
        local.close()

    assert result.vectors.shape == (1, DIMENSION)
    assert math.isclose(float(np.linalg.norm(result.vectors[0])), 1.0, rel_tol=1e-5)


async def test_an_onnx_encoder_without_onnx_runtime_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )

    with pytest.raises(FailedPrecondition) as refused:
        LocalEmbedder(encoder="onnx")

    assert refused.value.reason == "EMBEDDING_ENCODER_UNAVAILABLE"


async def test_the_model_leaves_memory_after_its_keep_alive_and_comes_back_with_the_same_vectors() -> None:
    local = LocalEmbedder(keep_alive=0.2)
    try:
        first = await local.embed(SENTENCES)
        assert local.loaded
        model = weakref.ref(local._model)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not local.loaded:
                break
        assert not local.loaded
        # Nothing holds on to the weights: their memory is freed (and trimmed back to the system).
        assert model() is None

        again = await local.embed(SENTENCES)
        assert local.loaded
        np.testing.assert_array_equal(first.vectors, again.vectors)
    finally:
        local.close()


async def test_a_request_within_the_keep_alive_keeps_the_model_loaded() -> None:
    local = LocalEmbedder(keep_alive=0.5)
    try:
        await local.embed(["first"])
        for _ in range(4):
            await asyncio.sleep(0.2)
            await local.embed(["again"])
            assert local.loaded
    finally:
        local.close()
