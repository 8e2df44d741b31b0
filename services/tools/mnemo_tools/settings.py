"""Settings of the tools service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field

from mnemo_core.settings import ServiceName, ServiceSettings


class ToolsSettings(ServiceSettings):
    """`MNEMO_*` env and the `[tools]` table of the config file."""

    service: ClassVar[ServiceName] = "tools"
    section: ClassVar[str] = "tools"

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_TOOLS_DATABASE_URL", "MNEMO_DATABASE_URL"),
    )
    # Longest tool return shown to the model when a tool does not set its own limit.
    default_return_char_limit: int = 50_000

    # Sandbox: limits of one custom tool run (a tool may ask for a shorter or longer timeout, up to the max).
    sandbox_timeout_seconds: float = 30.0
    sandbox_max_timeout_seconds: float = 300.0
    # Address space of each process of a run (RLIMIT_AS).
    sandbox_memory_mb: int = 512
    # Processes (and threads) a run may have at once (RLIMIT_NPROC, per run uid when running as root).
    sandbox_max_processes: int = 16
    # Largest file a run may write (RLIMIT_FSIZE), and the size of its private /tmp.
    sandbox_max_file_mb: int = 16
    sandbox_workdir_mb: int = 64
    # stdout + stderr a run may write before it is stopped, and how much of each is kept and returned.
    sandbox_max_output_bytes: int = 1 << 20
    sandbox_kept_output_bytes: int = 64 << 10
    # Runs at the same time; each gets its own uid (sandbox_uid_base + 1 + slot) when the service is root.
    sandbox_concurrency: int = 8
    sandbox_uid_base: int = 61000
    # Refuse custom tool runs (FAILED_PRECONDITION) when the machine cannot give runs their own network
    # namespace and private /tmp; the service itself still starts and serves.
    sandbox_require_isolation: bool = False
    # Installing tools' pip requirements (wheels only): extra wheel locations, an index, offline mode.
    sandbox_pip_find_links: str = ""
    sandbox_pip_index_url: str = ""
    sandbox_pip_offline: bool = False
    sandbox_pip_timeout_seconds: float = 300.0

    # MCP: whether stdio servers (commands run as the tools service's user) may be registered.
    mcp_stdio_enabled: bool = True
    # Longest wait for an MCP server to connect, list its tools or answer one call.
    mcp_timeout_seconds: float = 60.0
