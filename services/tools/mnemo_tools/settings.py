"""Settings of the tools service."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr

from mnemo_core.settings import ServiceName, ServiceSettings


class ToolsSettings(ServiceSettings):
    """`MNEMO_*` env and the `[tools]` table of the config file."""

    service: ClassVar[ServiceName] = "tools"
    section: ClassVar[str] = "tools"

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_TOOLS_DATABASE_URL", "MNEMO_DATABASE_URL"),
    )
    # Not on a turn's path unless a custom tool runs (which costs far more than the loop); the sandbox's
    # children and signals stay on the standard loop, whose child handling the sandbox was built against.
    event_loop: Literal["uvloop", "asyncio"] = "asyncio"
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
    # Runs one organization may have at once, and how many more of its runs may wait for a slot
    # (beyond that: RESOURCE_EXHAUSTED), so that one organization cannot starve the others.
    sandbox_org_concurrency: int = 4
    sandbox_org_queue: int = 64
    sandbox_uid_base: int = 61000
    # Where runs cannot be isolated (the service is not root and user namespaces are not allowed),
    # custom tools are refused. true runs them anyway, as this service's user with rlimits only: for a
    # single-user machine, never for a server others reach.
    sandbox_allow_unisolated: bool = False
    # cgroup v2 that bounds each run's memory and processes as a whole: "auto" (the service's own cgroup
    # when it was delegated to it, e.g. systemd Delegate=yes), a path under /sys/fs/cgroup, or "" (off).
    sandbox_cgroup: str = "auto"
    # Installing tools' pip requirements (wheels only): extra wheel locations, an index, offline mode.
    sandbox_pip_find_links: str = ""
    sandbox_pip_index_url: str = ""
    sandbox_pip_offline: bool = False
    sandbox_pip_timeout_seconds: float = 300.0

    # A single-user install (`mnemo server` sets MNEMO_SINGLE_USER=true for its services): the one user
    # is also the operator, so stdio MCP servers are on and reach the network unless set otherwise.
    single_user: bool = False
    # MCP stdio servers: commands started in the tool sandbox. Registering one is for admins, off
    # unless enabled (unset: on in a single-user install only), and limited to these commands (names
    # looked up on the sandbox's PATH, or absolute paths), which must be visible in the sandbox: under
    # /usr, /bin, /lib or one of mcp_stdio_paths (host paths a server may read).
    mcp_stdio_enabled: bool | None = None
    mcp_stdio_commands: list[str] = Field(default_factory=lambda: ["npx", "uvx", "node", "python3"])
    mcp_stdio_paths: list[str] = Field(default_factory=list)
    # Whether stdio servers reach the network (off: a network namespace of their own, like tool runs;
    # unset: on in a single-user install only).
    mcp_stdio_network: bool | None = None
    # stdio server processes this service runs at once.
    mcp_stdio_max_servers: int = 16
    # Fernet keys (comma-separated; the first seals, all open) for tool environment values and MCP
    # headers/env in the database; unset: one generated into $MNEMO_HOME/secrets.key (mode 0600).
    # Rotate: put a new key first, keep the old one after it, restart (every value is sealed again at
    # start), then drop the old one.
    secrets_key: SecretStr | None = None
    # MCP servers one organization may register (RESOURCE_EXHAUSTED beyond it; 0: no cap).
    mcp_max_servers_per_org: int = Field(default=50, ge=0)
    # Streamable HTTP servers: URLs that resolve to loopback, private, link-local or other non-public
    # addresses are refused unless one of these networks (CIDR, e.g. "10.1.0.0/16") contains them.
    mcp_http_allowed_networks: list[str] = Field(default_factory=list)
    # Largest response body an MCP server may send (bytes).
    mcp_max_response_bytes: int = 16 << 20
    # Longest wait for an MCP server to connect, list its tools or answer one call.
    mcp_timeout_seconds: float = 60.0
    # Largest input schema a tool may have (bytes of JSON), and the longest a check of arguments against
    # it may take.
    tool_schema_max_bytes: int = 64 << 10
    argument_check_seconds: float = 2.0

    @property
    def stdio_enabled(self) -> bool:
        """Whether stdio MCP servers may be registered and started."""
        return self.single_user if self.mcp_stdio_enabled is None else self.mcp_stdio_enabled

    @property
    def stdio_network(self) -> bool:
        """Whether stdio MCP servers reach the network."""
        return self.single_user if self.mcp_stdio_network is None else self.mcp_stdio_network
