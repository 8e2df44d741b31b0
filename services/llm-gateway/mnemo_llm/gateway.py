"""The llm-gateway's domain: route a chat to its provider within the caller's deadline."""

from __future__ import annotations

from mnemo.llm.v1 import llm_pb2
from mnemo_core.actor import remaining_time
from mnemo_core.errors import DeadlineExceeded
from mnemo_core.validation import invalid
from mnemo_llm.providers import Providers


class LlmGateway:
    """Runs chat requests on the configured providers."""

    def __init__(self, providers: Providers, *, request_timeout: float) -> None:
        self._providers = providers
        self._timeout = request_timeout

    async def chat(self, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        """One completion; the caller's deadline bounds the provider request and its retries."""
        if not request.messages:
            raise invalid("messages", "must not be empty")
        provider, model = self._providers.resolve(request.model)
        timeout = self._timeout
        remaining = remaining_time()
        if remaining is not None:
            if remaining <= 0:
                raise DeadlineExceeded("the caller's deadline has passed")
            timeout = min(timeout, remaining)
        return await provider.chat(model, request, time_budget=timeout)

    async def aclose(self) -> None:
        await self._providers.aclose()
