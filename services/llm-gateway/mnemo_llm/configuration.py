"""What the settings configure, read without building anything: the named providers, the local models,
and a description of them for people. Light to import (the `mnemo` command uses it)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mnemo_llm.local_model import BUNDLED_MODEL, LocalModelSpec, bundled_weights_installed, llama_available
from mnemo_llm.settings import LlmSettings, ProviderConfig

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


def builtin_provider_configs(settings: LlmSettings) -> dict[str, ProviderConfig]:
    """The providers the plain settings (OPENAI_API_KEY, ANTHROPIC_API_KEY, MNEMO_OLLAMA_BASE_URL) configure."""
    configs: dict[str, ProviderConfig] = {}
    if settings.openai_api_key or settings.openai_base_url:
        configs["openai"] = ProviderConfig(
            kind="openai",
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            batch=settings.openai_batch,
        )
    if settings.anthropic_api_key or settings.anthropic_base_url:
        configs["anthropic"] = ProviderConfig(
            kind="anthropic", base_url=settings.anthropic_base_url, api_key=settings.anthropic_api_key
        )
    if settings.ollama_base_url:
        url = settings.ollama_base_url
        # OLLAMA_HOST is often a bare host:port.
        configs["ollama"] = ProviderConfig(kind="ollama", base_url=url if "://" in url else f"http://{url}")
    return configs


def local_model_specs(settings: LlmSettings) -> list[LocalModelSpec]:
    """The models served as "local/<name>" (none without llama-cpp-python or with local_chat off)."""
    if settings.local_chat == "off" or not llama_available():
        return []
    specs = [
        LocalModelSpec(name, Path(path).expanduser(), settings.local_context_window)
        for name, path in settings.local_models.items()
    ]
    if bundled_weights_installed() and BUNDLED_MODEL not in settings.local_models:
        specs.insert(0, LocalModelSpec(BUNDLED_MODEL, None, settings.local_context_window))
    return specs


def provider_configs(settings: LlmSettings) -> dict[str, ProviderConfig]:
    """Every named provider: the built-in ones, then the config file's (which win on a name clash)."""
    return {**builtin_provider_configs(settings), **{k.lower(): v for k, v in settings.providers.items()}}


def _without_credentials(url: str) -> str:
    """`url` without a user:password part, should one have been written into it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def describe_providers(settings: LlmSettings) -> list[str]:
    """One line per chat provider the settings configure, for people (never with a key)."""
    configs = provider_configs(settings)
    lines = []
    for name, config in sorted(configs.items()):
        where = config.base_url or {
            "openai": "https://api.openai.com/v1",
            "anthropic": "https://api.anthropic.com",
        }.get(config.kind, DEFAULT_OLLAMA_URL)
        lines.append(f"{name}/... ({config.kind} API at {_without_credentials(where)})")
    if "local" not in configs:
        lines += [
            f"local/{spec.name} (offline on this machine; a tiny model: expect tiny-model quality)"
            for spec in local_model_specs(settings)
        ]
    return lines
