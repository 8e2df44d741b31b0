"""Settings of the llm-gateway service. Provider keys come from env or the config file only."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr

from mnemo_core.settings import ServiceName, ServiceSettings


class LlmSettings(ServiceSettings):
    """`MNEMO_*` env (plus the providers' own `OPENAI_API_KEY`) and the `[llm]` table of the config file."""

    service: ClassVar[ServiceName] = "llm"
    section: ClassVar[str] = "llm"

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_LLM_DATABASE_URL", "MNEMO_DATABASE_URL"),
    )
    # OpenAI or any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, OpenRouter, ...).
    openai_base_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_OPENAI_BASE_URL", "OPENAI_BASE_URL", "openai_base_url"),
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MNEMO_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key"),
    )
    # Seconds one provider request may take (the caller's deadline may cut it shorter).
    provider_timeout: float = 120.0
    # Retries of a provider request on 429 / 5xx / timeouts, with backoff.
    provider_max_retries: int = 2
    # Embedding model of an Embed request that names none, as "provider/model". Only the bundled local
    # model runs today.
    default_embedding_model: str = "local/all-minilm-l6-v2"
    # BLAS threads of the local embedding model: 1 suits a machine shared with the rest of the mesh; more
    # embed faster on cores of their own.
    embedding_threads: int = Field(default=1, ge=1)
