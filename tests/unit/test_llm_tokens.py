"""Token counting works offline: tiktoken's encodings are built from files shipped in a wheel."""

from __future__ import annotations

from typing import Any

import pytest
import tiktoken.load

from mnemo.llm.v1 import llm_pb2
from mnemo_llm import tokens


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt of tiktoken to fetch an encoding fails the test, and no encoding is cached yet."""

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError(f"tiktoken tried to download {args}")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)
    monkeypatch.setattr(tokens, "_encodings", {})


@pytest.mark.usefixtures("no_downloads")
def test_encodings_are_built_without_any_download_and_give_tiktokens_token_ids() -> None:
    assert tokens.encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert tokens.encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokens.encoding("o200k_base").decode([24912, 2375]) == "hello world"


@pytest.mark.usefixtures("no_downloads")
def test_special_tokens_of_tiktoken_are_kept() -> None:
    assert tokens.encoding("cl100k_base").encode("<|endoftext|>", allowed_special="all") == [100257]
    assert tokens.encoding("o200k_base").encode("<|endoftext|>", allowed_special="all") == [199999]


@pytest.mark.parametrize(
    ("kind", "model", "expected"),
    [
        ("openai", "gpt-4o-mini", ("o200k_base", True)),
        ("openai", "gpt-4.1-2025-04-14", ("o200k_base", True)),
        ("openai", "gpt-4", ("cl100k_base", True)),
        ("openai", "text-embedding-3-small", ("cl100k_base", True)),
        ("openai", "meta-llama/Llama-3-70b", ("o200k_base", False)),
        ("anthropic", "claude-sonnet-4-5", ("o200k_base", False)),
        ("ollama", "llama3.2", ("o200k_base", False)),
        ("local", "qwen2.5-coder-0.5b-instruct", ("o200k_base", False)),
    ],
)
def test_openai_models_are_exact_and_every_other_model_is_an_o200k_estimate(
    kind: str, model: str, expected: tuple[str, bool]
) -> None:
    assert tokens.encoding_for(kind, model) == expected


def test_chat_count_adds_openais_per_message_framing() -> None:
    enc = tokens.encoding("o200k_base")
    request = llm_pb2.ChatRequest(
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="You are terse."),
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="Hi there", name="ada"),
        ]
    )

    counted = tokens.count_chat("openai", "gpt-4o", request)

    expected = (
        3
        + len(enc.encode("You are terse."))
        + 3
        + len(enc.encode("Hi there"))
        + 1
        + len(enc.encode("ada"))
        + 3
    )
    assert counted == tokens.TokenCount(expected, True, "tiktoken/o200k_base")


def test_text_that_looks_like_a_special_token_is_counted_as_text() -> None:
    assert tokens.count_text("openai", "gpt-4o", "<|endoftext|>") > 1
