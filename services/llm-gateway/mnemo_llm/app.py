"""Wires the llm-gateway: providers from settings, the local embedder, servicer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_llm.embeddings import LocalEmbedder
from mnemo_llm.gateway import LlmGateway
from mnemo_llm.providers import ChatProvider, Providers
from mnemo_llm.servicer import LlmServicer
from mnemo_llm.settings import LlmSettings

log = logging.getLogger(__name__)


def providers_from(settings: LlmSettings) -> Providers:
    """The providers the settings configure (none is a valid, if useless, configuration)."""
    configured: dict[str, ChatProvider] = {}
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if key or settings.openai_base_url:
        from mnemo_llm.openai_provider import OpenAIProvider

        # OpenAI-compatible servers often need no key; the SDK insists on one.
        configured["openai"] = OpenAIProvider(
            api_key=key or "unused",
            base_url=settings.openai_base_url or None,
            max_retries=settings.provider_max_retries,
        )
    if not configured:
        log.warning("no LLM provider configured: agent turns will fail until OPENAI_API_KEY is set")
    return Providers(configured)


class LlmApp:
    """The llm-gateway's servicer and providers."""

    def __init__(self, gateway: LlmGateway) -> None:
        self.gateway = gateway

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        llm_pb2_grpc.add_LlmServiceServicer_to_server(LlmServicer(self.gateway), server)
        return [llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name]

    async def aclose(self) -> None:
        await self.gateway.aclose()


async def build(settings: LlmSettings) -> LlmApp:
    """Builds the app from settings."""
    gateway = LlmGateway(
        providers_from(settings),
        request_timeout=settings.provider_timeout,
        embedder=LocalEmbedder(blas_threads=settings.embedding_threads),
        default_embedding_model=settings.default_embedding_model,
    )
    return LlmApp(gateway)
