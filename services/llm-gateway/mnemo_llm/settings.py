"""Settings of the llm-gateway service. Provider keys come from env or the config file only."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr

from mnemo_core.settings import ServiceName, ServiceSettings

ProviderKind = Literal["openai", "anthropic", "ollama"]


class ProviderConfig(BaseModel):
    """One named provider: its wire format, where it listens and the key it wants."""

    model_config = ConfigDict(extra="forbid")

    # Wire format: "openai" for any OpenAI-compatible server (vLLM, LM Studio, llama.cpp, OpenRouter...).
    kind: ProviderKind = "openai"
    # Base URL of the API; empty means the kind's public endpoint (Ollama: http://127.0.0.1:11434).
    base_url: str = ""
    # The key itself (keep the config file private) ...
    api_key: SecretStr | None = None
    # ... or the name of the environment variable that holds it.
    api_key_env: str = ""
    # Whether the server has the provider's batch API (LlmService.CreateChatBatch): unset means yes for
    # OpenAI's own API and for Anthropic, no for other OpenAI-compatible servers.
    batch: bool | None = None


class ModelEntry(BaseModel):
    """What the catalogue knows about one model (for models the provider does not describe)."""

    model_config = ConfigDict(extra="forbid")

    context_window: int = Field(default=0, ge=0)
    max_output_tokens: int = Field(default=0, ge=0)
    # "chat" or "embedding".
    kind: Literal["chat", "embedding"] = "chat"
    embedding_dimension: int = Field(default=0, ge=0)


class LlmSettings(ServiceSettings):
    """`MNEMO_*` env (plus the providers' own `OPENAI_API_KEY`, ...) and the `[llm]` table of the config file."""

    service: ClassVar[ServiceName] = "llm"
    section: ClassVar[str] = "llm"

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_LLM_DATABASE_URL", "MNEMO_DATABASE_URL"),
    )
    # OpenAI or any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, OpenRouter, ...), as "openai".
    openai_base_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_OPENAI_BASE_URL", "OPENAI_BASE_URL", "openai_base_url"),
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MNEMO_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key"),
    )
    # Whether the "openai" provider has the Batches API: unset means yes for OpenAI's own API only.
    openai_batch: bool | None = Field(
        default=None, validation_alias=AliasChoices("MNEMO_OPENAI_BATCH", "openai_batch")
    )
    # Anthropic's messages API, as "anthropic".
    anthropic_base_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL", "anthropic_base_url"),
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MNEMO_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY", "anthropic_api_key"),
    )
    # An Ollama server's native API, as "ollama" (e.g. http://127.0.0.1:11434); unset: no Ollama.
    ollama_base_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_OLLAMA_BASE_URL", "OLLAMA_HOST", "ollama_base_url"),
    )
    # More providers by name: `[llm.providers.<name>]` tables, or MNEMO_LLM_PROVIDERS as JSON
    # ({"vllm": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}}). A name here wins over the
    # built-in ones above.
    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict, validation_alias=AliasChoices("MNEMO_LLM_PROVIDERS", "providers")
    )
    # The model catalogue: `[llm.models."provider/model"]` tables (or MNEMO_LLM_MODELS as JSON), over the
    # built-in one; merged with what providers report.
    models: dict[str, ModelEntry] = Field(
        default_factory=dict, validation_alias=AliasChoices("MNEMO_LLM_MODELS", "models")
    )
    # The offline model, as "local/<name>": "auto" serves it when llama-cpp-python is installed (the
    # `local` extra), "off" never.
    local_chat: Literal["auto", "off"] = "auto"
    # GGUF files served as "local/<name>" besides the bundled one: {"<name>": "/path/to/model.gguf"}.
    local_models: dict[str, str] = Field(default_factory=dict)
    # Context window the local model runs with, in tokens, and its CPU threads.
    local_context_window: int = Field(default=8192, ge=512)
    local_threads: int = Field(default=2, ge=1)
    # Seconds one provider request may take (the caller's deadline may cut it shorter).
    provider_timeout: float = 120.0
    # Retries of a provider request on 429 / 5xx / timeouts, with exponential backoff and jitter.
    provider_max_retries: int = Field(default=2, ge=0)
    # First backoff delay in seconds; it doubles per retry, up to provider_retry_max_delay.
    provider_retry_initial_delay: float = Field(default=0.5, ge=0)
    provider_retry_max_delay: float = Field(default=8.0, ge=0)
    # Embedding model of an Embed request that names none, as "provider/model".
    default_embedding_model: str = "local/all-minilm-l6-v2"
    # BLAS threads of the local embedding model: 1 suits a machine shared with the rest of the mesh; more
    # embed faster on cores of their own.
    embedding_threads: int = Field(default=1, ge=1)
    # Where the local embedding model's encoder layers run: "numpy" (default, least memory) or "onnx"
    # (ONNX Runtime: short queries about twice as fast, ~100 MB more memory; needs the `onnx` extra).
    embedding_encoder: Literal["numpy", "onnx"] = "numpy"
    # Seconds without an embedding request after which the local model leaves memory (~60 MB); the next
    # request loads it again (~0.3 s). 0 keeps it loaded for the process's life.
    embedding_keep_alive_seconds: float = Field(default=300.0, ge=0)
    # Seconds between two writes of the usage ledger (calls are recorded in memory meanwhile).
    usage_flush_interval: float = Field(default=0.5, gt=0)
