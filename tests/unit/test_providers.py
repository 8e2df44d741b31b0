"""Picking a provider from a `provider/model` name, and the gateway's checks before calling it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from mnemo.llm.v1 import llm_pb2
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from mnemo_llm.anthropic_provider import AnthropicProvider
from mnemo_llm.app import providers_from
from mnemo_llm.configuration import describe_providers
from mnemo_llm.gateway import LlmGateway
from mnemo_llm.ollama_provider import OllamaProvider
from mnemo_llm.openai_provider import OpenAIProvider
from mnemo_llm.providers import ModelName, Providers
from mnemo_llm.settings import LlmSettings

# Nothing listens here: these tests never reach a provider.
UNREACHABLE = "http://127.0.0.1:9/v1"


@pytest.fixture
async def openai_provider() -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(api_key="sk-test", base_url=UNREACHABLE, max_retries=0)
    yield provider
    await provider.aclose()


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("MNEMO_", "OPENAI_", "ANTHROPIC_", "OLLAMA_")) or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MNEMO_HOME", str(tmp_path))


def test_model_names_are_provider_slash_model_with_a_case_insensitive_provider() -> None:
    assert ModelName.parse("openai/gpt-4o-mini") == ModelName("openai", "gpt-4o-mini")
    assert ModelName.parse("OpenAI/GPT-4o") == ModelName("openai", "GPT-4o")
    assert ModelName.parse("openai/meta-llama/llama-3-70b") == ModelName("openai", "meta-llama/llama-3-70b")


@pytest.mark.parametrize("name", ["", "gpt-4o", "openai/", "/gpt-4o", "/"])
def test_model_name_without_provider_or_model_is_invalid_argument(name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        ModelName.parse(name)

    assert [v.field for v in refused.value.violations] == ["model"]
    assert repr(name) in refused.value.message


def test_resolve_without_any_provider_is_failed_precondition_not_configured() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        Providers({}).resolve("openai/gpt-4o")

    assert refused.value.reason == "LLM_PROVIDER_NOT_CONFIGURED"
    assert "OPENAI_API_KEY" in refused.value.message


def test_resolve_checks_the_model_name_before_anything_else() -> None:
    with pytest.raises(InvalidArgument):
        Providers({}).resolve("gpt-4o")


async def test_resolve_returns_the_configured_provider_and_the_bare_model(
    openai_provider: OpenAIProvider,
) -> None:
    providers = Providers({"openai": openai_provider})

    assert providers.resolve("openai/gpt-4o") == (openai_provider, "gpt-4o")
    assert providers.resolve("OPENAI/gpt-4o") == (openai_provider, "gpt-4o")


async def test_resolve_of_a_known_but_unconfigured_provider_is_failed_precondition_naming_it(
    openai_provider: OpenAIProvider,
) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        Providers({"openai": openai_provider}).resolve("anthropic/claude-sonnet")

    assert refused.value.reason == "LLM_PROVIDER_NOT_CONFIGURED"
    assert refused.value.metadata == {"provider": "anthropic"}
    assert "openai" in refused.value.message


async def test_resolve_of_an_unknown_provider_is_not_found_naming_it(openai_provider: OpenAIProvider) -> None:
    with pytest.raises(NotFound) as refused:
        Providers({"openai": openai_provider}).resolve("acme/rocket")

    assert refused.value.reason == "PROVIDER_NOT_FOUND"
    assert refused.value.metadata == {"provider": "acme"}


async def test_no_key_and_no_base_url_configure_no_provider(clean_env: None) -> None:
    providers = providers_from(LlmSettings())

    with pytest.raises(FailedPrecondition) as refused:
        providers.resolve("openai/gpt-4o")
    await providers.aclose()

    assert refused.value.reason == "LLM_PROVIDER_NOT_CONFIGURED"


@pytest.mark.parametrize(
    "configured",
    [{"openai_api_key": "sk-test"}, {"openai_base_url": UNREACHABLE}],
    ids=["api-key", "base-url-only"],
)
async def test_an_api_key_or_a_base_url_configures_the_openai_provider(
    clean_env: None, configured: dict[str, str]
) -> None:
    providers = providers_from(LlmSettings(**configured))  # type: ignore[arg-type]

    provider, model = providers.resolve("openai/gpt-4o")
    await providers.aclose()

    assert isinstance(provider, OpenAIProvider)
    assert model == "gpt-4o"


async def test_gateway_refuses_a_chat_without_messages(openai_provider: OpenAIProvider) -> None:
    gateway = LlmGateway(Providers({"openai": openai_provider}), request_timeout=5)

    with pytest.raises(InvalidArgument) as refused:
        await gateway.chat(llm_pb2.ChatRequest(model="openai/gpt-4o"))

    assert [v.field for v in refused.value.violations] == ["messages"]


async def test_gateway_refuses_a_chat_whose_callers_deadline_has_already_passed(
    openai_provider: OpenAIProvider,
) -> None:
    gateway = LlmGateway(Providers({"openai": openai_provider}), request_timeout=5)
    request = llm_pb2.ChatRequest(
        model="openai/gpt-4o", messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="hi")]
    )

    with acting_as(Actor("org-1", "user-1"), deadline=time.monotonic() - 1), pytest.raises(DeadlineExceeded):
        await gateway.chat(request)


# --- providers from configuration ----------------------------------------------------------------------

PROVIDERS_TOML = """
[llm.providers.vllm]
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "VLLM_TOKEN"

[llm.providers.claude]
kind = "anthropic"
api_key = "sk-ant-from-file"

[llm.providers.gpu-box]
kind = "ollama"
base_url = "http://127.0.0.1:11500"

[llm.models."vllm/qwen3-32b"]
context_window = 32768
"""


def kinds_of(providers: Providers) -> dict[str, str]:
    return {name: providers.kind_of(name) for name in providers.names()}


async def test_named_providers_come_from_llm_provider_tables_of_the_config_file(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.toml").write_text(PROVIDERS_TOML)
    monkeypatch.setenv("VLLM_TOKEN", "token-from-env")
    settings = LlmSettings(local_chat="off")

    providers = providers_from(settings)
    vllm, model = providers.resolve("vllm/qwen3-32b")
    claude, _ = providers.resolve("claude/claude-sonnet-4-5")
    ollama, _ = providers.resolve("gpu-box/llama3.2")
    await providers.aclose()

    assert kinds_of(providers) == {"claude": "anthropic", "gpu-box": "ollama", "vllm": "openai"}
    assert isinstance(vllm, OpenAIProvider)
    assert model == "qwen3-32b"
    assert vllm._client.api_key == "token-from-env"
    assert str(vllm._client.base_url) == "http://127.0.0.1:8000/v1/"
    assert isinstance(claude, AnthropicProvider)
    assert claude._client.api_key == "sk-ant-from-file"
    assert isinstance(ollama, OllamaProvider)
    assert settings.models["vllm/qwen3-32b"].context_window == 32768


async def test_named_providers_come_from_json_in_mnemo_llm_providers(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "MNEMO_LLM_PROVIDERS", '{"openrouter": {"kind": "openai", "base_url": "http://127.0.0.1:9/api/v1"}}'
    )

    providers = providers_from(LlmSettings(local_chat="off"))
    await providers.aclose()

    assert kinds_of(providers) == {"openrouter": "openai"}


async def test_the_providers_own_variables_configure_anthropic_and_ollama(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11434")

    providers = providers_from(LlmSettings(local_chat="off"))
    ollama, _ = providers.resolve("ollama/llama3.2")
    await providers.aclose()

    assert kinds_of(providers) == {"anthropic": "anthropic", "ollama": "ollama"}
    assert str(ollama._client._client.base_url) == "http://127.0.0.1:11434"


def test_an_unknown_provider_kind_in_the_config_is_refused(clean_env: None, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[llm.providers.x]\nkind = "gemini"\n')

    with pytest.raises(ValidationError):
        LlmSettings()


async def test_provider_keys_are_never_shown_or_logged(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "config.toml").write_text(PROVIDERS_TOML)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    caplog.set_level(logging.DEBUG)

    settings = LlmSettings(local_chat="off")
    providers = providers_from(settings)
    await providers.aclose()

    shown = repr(settings) + str(settings.model_dump()) + settings.model_dump_json() + caplog.text
    for secret in ("sk-openai-secret", "sk-ant-secret", "sk-ant-from-file"):
        assert secret not in shown
    assert "VLLM_TOKEN is not set" in caplog.text


async def test_the_offline_model_is_not_served_when_switched_off(clean_env: None) -> None:
    providers = providers_from(LlmSettings(local_chat="off", local_models={"mine": "/models/mine.gguf"}))
    await providers.aclose()

    assert "local" not in providers.names()


@pytest.mark.local_model
async def test_the_offline_model_is_served_as_local_when_llama_cpp_is_installed(clean_env: None) -> None:
    providers = providers_from(LlmSettings(local_models={"mine": "/models/mine.gguf"}))
    provider, model = providers.resolve("local/mine")
    listed = [m.model for m in await provider.list_models(time_budget=1)]
    await providers.aclose()

    assert model == "mine"
    assert "mine" in listed


def test_mnemo_providers_describes_each_provider_without_its_key_or_url_credentials(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv(
        "MNEMO_LLM_PROVIDERS",
        '{"proxy": {"kind": "openai", "base_url": "http://bob:hunter2@127.0.0.1:9/v1"}}',
    )

    lines = describe_providers(LlmSettings(local_chat="off"))

    assert lines == [
        "anthropic/... (anthropic API at https://api.anthropic.com)",
        "proxy/... (openai API at http://127.0.0.1:9/v1)",
    ]
