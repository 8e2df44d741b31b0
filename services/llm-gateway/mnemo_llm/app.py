"""Wires the llm-gateway: providers from settings, the local models, the usage ledger, the servicer."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import grpc

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.db import Database
from mnemo_core.migrations import prepare_schema
from mnemo_llm.catalogue import EMBEDDING, Catalogue, ModelFacts
from mnemo_llm.chat_batches import ChatBatches
from mnemo_llm.configuration import DEFAULT_OLLAMA_URL, local_model_specs, provider_configs
from mnemo_llm.embeddings import LOCAL_DIMENSION, LOCAL_MAX_TOKENS, LOCAL_MODEL_NAME, LocalEmbedder
from mnemo_llm.gateway import LlmGateway
from mnemo_llm.providers import ChatProvider, Providers
from mnemo_llm.resilience import RetryPolicy
from mnemo_llm.servicer import LlmServicer
from mnemo_llm.settings import LlmSettings, ProviderConfig
from mnemo_llm.usage import UsageLedger

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def _key(config: ProviderConfig, name: str) -> str:
    if config.api_key is not None:
        return config.api_key.get_secret_value()
    if config.api_key_env:
        value = os.environ.get(config.api_key_env, "")
        if not value:
            # The variable's name is safe to log; its value never is.
            log.warning("provider %s: environment variable %s is not set", name, config.api_key_env)
        return value
    return ""


def _build(config: ProviderConfig, name: str, settings: LlmSettings) -> ChatProvider:
    key = _key(config, name)
    if config.kind == "anthropic":
        from mnemo_llm.anthropic_provider import AnthropicProvider

        # A server that speaks the messages API may want no key; the SDK insists on one.
        return AnthropicProvider(
            api_key=key or "unused", base_url=config.base_url or None, batch_api=config.batch is not False
        )
    if config.kind == "ollama":
        from mnemo_llm.ollama_provider import OllamaProvider

        prefix = f"{name}/"
        windows = {
            model.removeprefix(prefix): entry.context_window
            for model, entry in settings.models.items()
            if model.lower().startswith(prefix) and entry.context_window
        }
        return OllamaProvider(
            base_url=config.base_url or DEFAULT_OLLAMA_URL, api_key=key, context_windows=windows
        )
    from mnemo_llm.openai_provider import OpenAIProvider

    # OpenAI-compatible servers often need no key; the SDK insists on one.
    return OpenAIProvider(api_key=key or "unused", base_url=config.base_url or None, batch_api=config.batch)


def providers_from(settings: LlmSettings) -> Providers:
    """The providers the settings configure (none is a valid, if useless, configuration)."""
    configs = provider_configs(settings)
    configured: dict[str, ChatProvider] = {
        name: _build(config, name, settings) for name, config in configs.items()
    }
    kinds: dict[str, str] = {name: config.kind for name, config in configs.items()}
    specs = local_model_specs(settings)
    if specs and "local" not in configured:
        from mnemo_llm.local_provider import LocalProvider

        configured["local"] = LocalProvider(
            specs, models_dir=settings.home / "models", threads=settings.local_threads
        )
        kinds["local"] = "local"
    if configured:
        log.info("LLM providers: %s", ", ".join(f"{n} ({kinds[n]})" for n in sorted(configured)))
    else:
        log.warning(
            "no LLM provider configured: agent turns will fail until OPENAI_API_KEY, ANTHROPIC_API_KEY or "
            "MNEMO_OLLAMA_BASE_URL is set (or the offline model is installed)"
        )
    return Providers(configured, kinds)


def catalogue_from(settings: LlmSettings, providers: Providers) -> Catalogue:
    """The model catalogue: built-in facts, the config file's `[llm.models]`, and the local models."""
    extra = {
        f"local/{LOCAL_MODEL_NAME}": ModelFacts(EMBEDDING, LOCAL_MAX_TOKENS, 0, LOCAL_DIMENSION),
        **{
            f"local/{spec.name}": ModelFacts(context_window=spec.context_window)
            for spec in local_model_specs(settings)
        },
    }
    return Catalogue(providers.kinds, settings.models, extra)


class LlmApp:
    """The llm-gateway's servicer, providers and database."""

    def __init__(self, gateway: LlmGateway, db: Database | None = None) -> None:
        self.gateway = gateway
        self.db = db

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        llm_pb2_grpc.add_LlmServiceServicer_to_server(LlmServicer(self.gateway), server)
        return [llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name]

    async def aclose(self) -> None:
        await self.gateway.aclose()
        if self.db is not None:
            await self.db.dispose()


async def build(settings: LlmSettings) -> LlmApp:
    """Opens (and migrates) the usage ledger's database and builds the app from settings."""
    db = Database(settings.resolved_database_url(), schema="llm", cache_mb=settings.sqlite_cache_mb)
    await prepare_schema(db, MIGRATIONS, migrate=settings.migrate, wait_seconds=settings.schema_wait_seconds)
    providers = providers_from(settings)
    retry = RetryPolicy(
        max_retries=settings.provider_max_retries,
        initial_delay=settings.provider_retry_initial_delay,
        max_delay=settings.provider_retry_max_delay,
        attempt_timeout=settings.provider_timeout,
    )
    ledger = UsageLedger(db, flush_interval=settings.usage_flush_interval)
    gateway = LlmGateway(
        providers,
        request_timeout=settings.provider_timeout,
        embedder=LocalEmbedder(
            blas_threads=settings.embedding_threads,
            encoder=settings.embedding_encoder,
            keep_alive=settings.embedding_keep_alive_seconds or None,
        ),
        default_embedding_model=settings.default_embedding_model,
        retry=retry,
        catalogue=catalogue_from(settings, providers),
        ledger=ledger,
        chat_batches=ChatBatches(db, providers, retry, ledger),
    )
    return LlmApp(gateway, db)
