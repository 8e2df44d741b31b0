"""Model providers behind one interface; `provider/model` names pick one.

Only the OpenAI chat-completions wire format is wired here (OpenAI itself and any
OpenAI-compatible server); a model of an unconfigured provider is refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mnemo.llm.v1 import llm_pb2
from mnemo_core.errors import FailedPrecondition, NotFound
from mnemo_core.validation import invalid


@dataclass(frozen=True, slots=True)
class ModelName:
    """A model named as `provider/model`."""

    provider: str
    model: str

    @classmethod
    def parse(cls, name: str, field: str = "model") -> ModelName:
        provider, sep, model = name.partition("/")
        if not sep or not provider or not model:
            raise invalid(field, f"must be 'provider/model', e.g. 'openai/gpt-4o-mini' (got {name!r})")
        return cls(provider.lower(), model)


class ChatProvider(Protocol):
    """One provider's chat API."""

    async def chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> llm_pb2.ChatResponse:
        """Runs one completion of `request` on `model` (the name without the provider prefix)."""
        ...

    async def aclose(self) -> None:
        """Closes connection pools."""
        ...


KNOWN_PROVIDERS = ("openai", "anthropic", "ollama", "local")


class Providers:
    """The configured providers, by name."""

    def __init__(self, providers: dict[str, ChatProvider]) -> None:
        self._providers = providers

    def resolve(self, name: str) -> tuple[ChatProvider, str]:
        """The provider for `provider/model` and the bare model name."""
        model = ModelName.parse(name)
        provider = self._providers.get(model.provider)
        if provider is not None:
            return provider, model.model
        if not self._providers:
            raise FailedPrecondition(
                "no LLM provider configured: set OPENAI_API_KEY (and MNEMO_OPENAI_BASE_URL for an "
                "OpenAI-compatible server) and restart",
                reason="LLM_PROVIDER_NOT_CONFIGURED",
            )
        if model.provider in KNOWN_PROVIDERS:
            raise FailedPrecondition(
                f"provider '{model.provider}' is not configured on this server; configured: "
                f"{', '.join(sorted(self._providers))}",
                reason="LLM_PROVIDER_NOT_CONFIGURED",
                metadata={"provider": model.provider},
            )
        raise NotFound(
            f"unknown provider '{model.provider}'; configured: {', '.join(sorted(self._providers))}",
            reason="PROVIDER_NOT_FOUND",
            metadata={"provider": model.provider},
        )

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
