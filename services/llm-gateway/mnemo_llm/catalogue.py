"""The model catalogue: context windows of well-known models, overridden by the config file, merged with
what the providers report.

Precedence per model: the config file (`[llm.models."provider/model"]`) > what the provider reports >
the built-in table below. Built-in entries apply to every provider of their kind (a named
OpenAI-compatible provider serving "gpt-4o" gets its window), but are listed only for the provider itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from mnemo.llm.v1 import llm_pb2
from mnemo_llm.providers import ReportedModel
from mnemo_llm.settings import ModelEntry

CHAT = llm_pb2.MODEL_KIND_CHAT
EMBEDDING = llm_pb2.MODEL_KIND_EMBEDDING


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What is known about one model."""

    kind: llm_pb2.ModelKind.ValueType = CHAT
    context_window: int = 0
    max_output_tokens: int = 0
    embedding_dimension: int = 0


# Published limits (input window, longest reply) of models people commonly name, by provider kind.
BUILT_IN: dict[str, dict[str, ModelFacts]] = {
    "openai": {
        "gpt-4o": ModelFacts(CHAT, 128_000, 16_384),
        "gpt-4o-mini": ModelFacts(CHAT, 128_000, 16_384),
        "gpt-4.1": ModelFacts(CHAT, 1_047_576, 32_768),
        "gpt-4.1-mini": ModelFacts(CHAT, 1_047_576, 32_768),
        "gpt-4.1-nano": ModelFacts(CHAT, 1_047_576, 32_768),
        "gpt-5": ModelFacts(CHAT, 400_000, 128_000),
        "gpt-5-mini": ModelFacts(CHAT, 400_000, 128_000),
        "gpt-5-nano": ModelFacts(CHAT, 400_000, 128_000),
        "o3": ModelFacts(CHAT, 200_000, 100_000),
        "o3-mini": ModelFacts(CHAT, 200_000, 100_000),
        "o4-mini": ModelFacts(CHAT, 200_000, 100_000),
        "gpt-4-turbo": ModelFacts(CHAT, 128_000, 4_096),
        "gpt-3.5-turbo": ModelFacts(CHAT, 16_385, 4_096),
        "text-embedding-3-small": ModelFacts(EMBEDDING, 8_191, 0, 1_536),
        "text-embedding-3-large": ModelFacts(EMBEDDING, 8_191, 0, 3_072),
        "text-embedding-ada-002": ModelFacts(EMBEDDING, 8_191, 0, 1_536),
    },
    "anthropic": {
        "claude-opus-4-1": ModelFacts(CHAT, 200_000, 32_000),
        "claude-opus-4-0": ModelFacts(CHAT, 200_000, 32_000),
        "claude-sonnet-4-5": ModelFacts(CHAT, 200_000, 64_000),
        "claude-sonnet-4-0": ModelFacts(CHAT, 200_000, 64_000),
        "claude-haiku-4-5": ModelFacts(CHAT, 200_000, 64_000),
        "claude-3-7-sonnet-latest": ModelFacts(CHAT, 200_000, 64_000),
        "claude-3-5-haiku-latest": ModelFacts(CHAT, 200_000, 8_192),
    },
}


def _entry_facts(entry: ModelEntry) -> ModelFacts:
    return ModelFacts(
        kind=EMBEDDING if entry.kind == "embedding" else CHAT,
        context_window=entry.context_window,
        max_output_tokens=entry.max_output_tokens,
        embedding_dimension=entry.embedding_dimension,
    )


def _merge(base: ModelFacts, over: ModelFacts) -> ModelFacts:
    """`over`'s known values over `base`'s (a 0 means unknown and keeps the base value)."""
    return replace(
        base,
        kind=over.kind,
        context_window=over.context_window or base.context_window,
        max_output_tokens=over.max_output_tokens or base.max_output_tokens,
        embedding_dimension=over.embedding_dimension or base.embedding_dimension,
    )


class Catalogue:
    """Model facts by "provider/model", for the configured providers."""

    def __init__(
        self,
        kinds: Mapping[str, str],
        configured: Mapping[str, ModelEntry],
        extra: Mapping[str, ModelFacts] | None = None,
    ) -> None:
        # Provider name -> its kind, for the providers this server has.
        self._kinds = dict(kinds)
        self._configured = {name.lower(): _entry_facts(entry) for name, entry in configured.items()}
        # Models this server serves itself (the local ones), by full name.
        self._extra = {name.lower(): facts for name, facts in (extra or {}).items()}
        self._reported: dict[str, ModelFacts] = {}

    def remember(self, provider: str, models: Iterable[ReportedModel]) -> None:
        """Keeps what `provider` reported, for later lookups."""
        for model in models:
            self._reported[f"{provider}/{model.model}".lower()] = ModelFacts(
                kind=model.kind,
                context_window=model.context_window,
                embedding_dimension=model.embedding_dimension,
            )

    def _built_in(self, provider: str, model: str) -> ModelFacts | None:
        table = BUILT_IN.get(self._kinds.get(provider, provider), {})
        found = table.get(model.lower())
        if found is None:
            # Dated snapshots ("gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929") share their family's limits.
            prefixes = [name for name in table if model.lower().startswith(name + "-")]
            if prefixes:
                found = table[max(prefixes, key=len)]
        return found

    def facts(self, name: str) -> ModelFacts | None:
        """What is known about "provider/model", or None when nothing is."""
        key = name.lower()
        provider, _, model = key.partition("/")
        found = self._extra.get(key) or self._built_in(provider, model)
        for layer in (self._reported.get(key), self._configured.get(key)):
            if layer is not None:
                found = layer if found is None else _merge(found, layer)
        return found

    def context_window(self, name: str) -> int:
        facts = self.facts(name)
        return facts.context_window if facts else 0

    def listing(
        self, providers: Iterable[str], reported: Mapping[str, list[ReportedModel]]
    ) -> list[llm_pb2.ModelInfo]:
        """Every known model of `providers`, with the ones in `reported` marked as reported."""
        wanted = set(providers)
        names: dict[str, bool] = {}
        for provider in wanted:
            kind = self._kinds.get(provider, provider)
            for known in BUILT_IN.get(kind, {}):
                # Built-in OpenAI names only for OpenAI itself: a named compatible server serves others.
                if provider == kind:
                    names.setdefault(f"{provider}/{known}", False)
            for model in reported.get(provider, []):
                names[f"{provider}/{model.model}"] = True
        for name in [*self._configured, *self._extra]:
            if name.partition("/")[0] in wanted:
                names.setdefault(name, False)
        infos = []
        for name, was_reported in sorted(names.items()):
            facts = self.facts(name) or ModelFacts()
            provider = name.partition("/")[0]
            infos.append(
                llm_pb2.ModelInfo(
                    name=name,
                    provider=provider,
                    kind=facts.kind,
                    context_window=facts.context_window,
                    max_output_tokens=facts.max_output_tokens,
                    embedding_dimension=facts.embedding_dimension,
                    reported_by_provider=was_reported,
                )
            )
        return infos
