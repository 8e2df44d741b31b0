"""Settings precedence: defaults < config.toml top level < its [service] table < env MNEMO_* < init kwargs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import uvloop
from pydantic import ValidationError

from mnemo_agent.settings import AgentSettings
from mnemo_core.server import event_loop_factory
from mnemo_core.settings import MnemoSettings, config_file_path, default_home
from mnemo_gateway.settings import GatewaySettings
from mnemo_llm.settings import LlmSettings
from mnemo_memory.settings import MemorySettings
from mnemo_tools.settings import ToolsSettings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty MNEMO_HOME and an environment without any MNEMO_*/OPENAI_* variable."""
    for key in list(os.environ):
        if key.startswith(("MNEMO_", "OPENAI_")) or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MNEMO_HOME", str(tmp_path))
    return tmp_path


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


CONFIG = """
log_level = "DEBUG"
memory_port = 9001
default_block_limit = 111
database_url = "sqlite+aiosqlite:///top-level.db"

[memory]
default_block_limit = 222
database_url = "sqlite+aiosqlite:///memory-table.db"

[tools]
memory_port = 9002
"""


def test_defaults_apply_without_config_file_or_environment(home: Path) -> None:
    settings = MemorySettings()

    assert settings.home == home
    assert settings.grpc_host == "127.0.0.1"
    assert [settings.port_of(s) for s in ("agent", "memory", "tools", "llm")] == [8284, 8285, 8286, 8287]
    assert settings.address_of("tools") == "127.0.0.1:8286"
    assert settings.log_level == "INFO"
    assert settings.internal_token is None
    assert settings.migrate is True
    assert settings.default_block_limit == 5000
    assert settings.database_url == ""
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{home / 'data' / 'memory.db'}"


def test_each_service_defaults_to_its_own_sqlite_file_under_home(home: Path) -> None:
    assert ToolsSettings().resolved_database_url().endswith(str(home / "data" / "tools.db"))
    assert LlmSettings().resolved_database_url().endswith(str(home / "data" / "llm.db"))


def test_home_defaults_to_dot_mnemo_in_the_users_home_directory(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MNEMO_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))

    assert default_home() == tmp_path / "user" / ".mnemo"
    assert MnemoSettings().home == tmp_path / "user" / ".mnemo"
    assert config_file_path() == tmp_path / "user" / ".mnemo" / "config.toml"


def test_config_file_top_level_overrides_the_defaults(home: Path) -> None:
    write_config(home / "config.toml", CONFIG)

    common = MnemoSettings()

    assert common.log_level == "DEBUG"
    assert common.memory_port == 9001
    assert common.address_of("memory") == "127.0.0.1:9001"


def test_config_file_service_table_overrides_the_top_level_for_that_service_only(home: Path) -> None:
    write_config(home / "config.toml", CONFIG)

    memory, tools = MemorySettings(), ToolsSettings()

    assert memory.default_block_limit == 222
    assert memory.database_url == "sqlite+aiosqlite:///memory-table.db"
    assert memory.memory_port == 9001
    assert memory.log_level == "DEBUG"
    assert tools.memory_port == 9002
    assert tools.database_url == "sqlite+aiosqlite:///top-level.db"
    assert tools.log_level == "DEBUG"


def test_environment_overrides_the_config_files_service_table(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home / "config.toml", CONFIG)
    monkeypatch.setenv("MNEMO_DEFAULT_BLOCK_LIMIT", "333")
    monkeypatch.setenv("MNEMO_MEMORY_PORT", "9003")
    monkeypatch.setenv("MNEMO_LOG_LEVEL", "WARNING")

    settings = MemorySettings()

    assert settings.default_block_limit == 333
    assert settings.memory_port == 9003
    assert settings.log_level == "WARNING"


def test_init_kwargs_override_the_environment_and_the_config_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home / "config.toml", CONFIG)
    monkeypatch.setenv("MNEMO_DEFAULT_BLOCK_LIMIT", "333")
    monkeypatch.setenv("MNEMO_MEMORY_DATABASE_URL", "sqlite+aiosqlite:///env.db")

    settings = MemorySettings(default_block_limit=444, database_url="sqlite+aiosqlite:///init.db")

    assert settings.default_block_limit == 444
    assert settings.database_url == "sqlite+aiosqlite:///init.db"
    assert settings.resolved_database_url() == "sqlite+aiosqlite:///init.db"


def test_service_specific_database_url_env_beats_the_shared_one_and_the_config_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home / "config.toml", CONFIG)
    monkeypatch.setenv("MNEMO_DATABASE_URL", "postgresql+asyncpg://shared/db")
    monkeypatch.setenv("MNEMO_MEMORY_DATABASE_URL", "postgresql+asyncpg://memory/db")

    assert MemorySettings().database_url == "postgresql+asyncpg://memory/db"
    assert ToolsSettings().database_url == "postgresql+asyncpg://shared/db"


def test_shared_database_url_env_applies_to_every_service(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNEMO_DATABASE_URL", "postgresql+asyncpg://shared/db")

    assert MemorySettings().resolved_database_url() == "postgresql+asyncpg://shared/db"
    assert ToolsSettings().resolved_database_url() == "postgresql+asyncpg://shared/db"
    assert LlmSettings().resolved_database_url() == "postgresql+asyncpg://shared/db"


def test_unprefixed_database_url_environment_variable_is_ignored(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone-elses/db")

    assert MemorySettings().database_url == ""


def test_mnemo_config_names_the_config_file_instead_of_the_one_in_home(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_config(home / "config.toml", 'log_level = "DEBUG"\n')
    elsewhere = write_config(
        tmp_path / "elsewhere.toml", 'log_level = "ERROR"\n[memory]\ndefault_block_limit = 7\n'
    )
    monkeypatch.setenv("MNEMO_CONFIG", str(elsewhere))

    settings = MemorySettings()

    assert config_file_path() == elsewhere
    assert settings.log_level == "ERROR"
    assert settings.default_block_limit == 7


def test_mnemo_config_pointing_at_a_missing_file_means_defaults(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home / "config.toml", 'log_level = "DEBUG"\n')
    monkeypatch.setenv("MNEMO_CONFIG", str(home / "absent.toml"))

    assert MemorySettings().log_level == "INFO"


def test_address_of_a_service_uses_its_configured_address_when_set(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNEMO_MEMORY_ADDR", "memory.internal:7000")

    settings = MnemoSettings(tools_port=7100)

    assert settings.address_of("memory") == "memory.internal:7000"
    assert settings.address_of("tools") == "127.0.0.1:7100"


def test_internal_token_is_read_from_the_environment_and_kept_secret(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNEMO_INTERNAL_TOKEN", "hunter2")

    settings = MnemoSettings()

    assert settings.internal_token is not None
    assert settings.internal_token.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)


def test_llm_settings_read_the_providers_own_openai_variables(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-plain")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://plain/v1")
    plain = LlmSettings()
    monkeypatch.setenv("MNEMO_OPENAI_API_KEY", "sk-mnemo")
    monkeypatch.setenv("MNEMO_OPENAI_BASE_URL", "http://mnemo/v1")
    prefixed = LlmSettings()

    assert plain.openai_api_key is not None
    assert plain.openai_api_key.get_secret_value() == "sk-plain"
    assert plain.openai_base_url == "http://plain/v1"
    assert prefixed.openai_api_key is not None
    assert prefixed.openai_api_key.get_secret_value() == "sk-mnemo"
    assert prefixed.openai_base_url == "http://mnemo/v1"


def test_llm_settings_read_the_llm_table_of_the_config_file(home: Path) -> None:
    write_config(
        home / "config.toml",
        'provider_timeout = 5.0\n[llm]\nopenai_base_url = "http://local/v1"\nprovider_max_retries = 0\n',
    )

    settings = LlmSettings()

    assert settings.openai_base_url == "http://local/v1"
    assert settings.provider_max_retries == 0
    assert settings.provider_timeout == 5.0
    assert settings.openai_api_key is None


def test_invalid_value_in_the_environment_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNEMO_DEFAULT_BLOCK_LIMIT", "lots")

    with pytest.raises(ValueError, match="default_block_limit"):
        MemorySettings()


def test_unprefixed_database_url_is_ignored_by_the_llm_gateway_too(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone-elses/db")

    assert LlmSettings().database_url == ""


def test_tls_needs_both_certificate_and_key_and_the_rest_port_follows_the_mesh_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNEMO_CONFIG", str(tmp_path / "none.toml"))
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    with pytest.raises(ValidationError):
        MnemoSettings(home=tmp_path, tls_cert_file=cert)
    plain = GatewaySettings(home=tmp_path)
    mesh_tls = GatewaySettings(home=tmp_path, tls_cert_file=cert, tls_key_file=key)
    own = GatewaySettings(
        home=tmp_path,
        tls_cert_file=cert,
        tls_key_file=key,
        http_tls_cert_file=tmp_path / "public.pem",
        http_tls_key_file=tmp_path / "public.key",
    )

    assert not plain.tls
    assert plain.http_tls() is None
    assert plain.http_url.startswith("http://")
    assert mesh_tls.http_tls() == (cert, key)
    assert mesh_tls.http_url.startswith("https://")
    assert own.http_tls() == (tmp_path / "public.pem", tmp_path / "public.key")


def test_services_run_on_uvloop_by_default_and_the_tools_service_on_asyncio(home: Path) -> None:
    assert event_loop_factory(AgentSettings().event_loop) is uvloop.new_event_loop
    assert event_loop_factory(ToolsSettings().event_loop) is None
