"""Wires the tools service: database, registry, sandbox, MCP connections, servicers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from mnemo.tools.v1 import mcp_pb2, mcp_pb2_grpc, tool_pb2, tool_pb2_grpc
from mnemo_core import sealing
from mnemo_core.channels import Peers
from mnemo_core.db import Database
from mnemo_core.migrations import prepare_schema
from mnemo_tools import store
from mnemo_tools.agent_directory import AgentDirectory
from mnemo_tools.agent_env import AgentEnvironments
from mnemo_tools.environments import PackageEnvironments
from mnemo_tools.execution import ToolExecutor
from mnemo_tools.mcp_addresses import AddressPolicy
from mnemo_tools.mcp_connections import McpConnections
from mnemo_tools.mcp_servers import McpServers
from mnemo_tools.mcp_stdio import StdioPolicy
from mnemo_tools.registry import Registry
from mnemo_tools.sandbox import cgroups
from mnemo_tools.sandbox.runner import SandboxLimits, SandboxRunner
from mnemo_tools.servicers.mcp import McpServicer
from mnemo_tools.servicers.tools import ToolServicer
from mnemo_tools.settings import ToolsSettings

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
MB = 1 << 20


class ToolsApp:
    """The tools service's servicers and the resources they hold."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        executor: ToolExecutor,
        environments: AgentEnvironments,
        servers: McpServers,
        sandbox: SandboxRunner,
        connections: McpConnections,
        peers: Peers,
    ) -> None:
        self.db = db
        self.registry = registry
        self.executor = executor
        self.environments = environments
        self.servers = servers
        self.sandbox = sandbox
        self.connections = connections
        self.peers = peers

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        tool_pb2_grpc.add_ToolServiceServicer_to_server(
            ToolServicer(self.registry, self.executor, self.environments), server
        )
        mcp_pb2_grpc.add_McpServiceServicer_to_server(McpServicer(self.servers), server)
        return [
            tool_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name,
            mcp_pb2.DESCRIPTOR.services_by_name["McpService"].full_name,
        ]

    async def aclose(self) -> None:
        await self.connections.aclose()
        await self.sandbox.aclose()
        await self.peers.aclose()
        await self.db.dispose()


def log_isolation(capabilities: dict[str, Any], *, allow_unisolated: bool) -> None:
    """One line at start when tool runs are less isolated than the sandbox can make them."""
    if not capabilities.get("isolated"):
        reason = capabilities.get("error") or "no namespaces"
        if allow_unisolated:
            log.warning(
                "tool runs are NOT isolated on this machine (%s); sandbox_allow_unisolated is on, so custom "
                "tools run as this service's user and can read and write what it can",
                reason,
            )
        else:
            log.warning(
                "tool runs cannot be isolated on this machine (%s): custom tools are refused; "
                "see docs/adr/0300-tool-sandbox.md",
                reason,
            )
        return
    missing = [
        name
        for key, name in (("proc", "a fresh /proc"), ("seccomp", "a seccomp filter"))
        if not capabilities.get(key)
    ]
    if missing:
        log.warning(
            "tool runs are isolated, but without %s; see docs/adr/0300-tool-sandbox.md", " and ".join(missing)
        )


async def build(settings: ToolsSettings) -> ToolsApp:
    """Opens (and migrates) the database, installs the built-ins, starts the sandbox and builds the app."""
    secret_key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    db = Database(settings.resolved_database_url(), schema="tools", cache_mb=settings.sqlite_cache_mb)
    db.seal_with(sealing.Sealer(sealing.load_keys(secret_key, settings.home)))
    await prepare_schema(db, MIGRATIONS, migrate=settings.migrate, wait_seconds=settings.schema_wait_seconds)
    # Cheap (a row per variable and server) and what makes a key rotation complete.
    await db.write(store.reseal)
    registry = Registry(
        db,
        default_return_char_limit=settings.default_return_char_limit,
        max_timeout_seconds=settings.sandbox_max_timeout_seconds,
    )
    await registry.install_builtins()
    sandbox = SandboxRunner(
        slots=max(1, settings.sandbox_concurrency),
        slots_per_org=settings.sandbox_org_concurrency,
        max_waiting_per_org=settings.sandbox_org_queue,
        command_slots=max(0, settings.mcp_stdio_max_servers),
        uid_base=settings.sandbox_uid_base,
        fallback_workdir=settings.home / "sandbox" / "work",
        hidden_paths=[settings.home],
        allow_unisolated=settings.sandbox_allow_unisolated,
        cgroup=cgroups.prepare(settings.sandbox_cgroup),
    )
    log_isolation(await sandbox.start(), allow_unisolated=settings.sandbox_allow_unisolated)
    stdio = StdioPolicy(
        enabled=settings.stdio_enabled,
        commands=tuple(settings.mcp_stdio_commands),
        paths=tuple(settings.mcp_stdio_paths),
        network=settings.stdio_network,
    )
    addresses = AddressPolicy(settings.mcp_http_allowed_networks)
    connections = McpConnections(
        timeout=settings.mcp_timeout_seconds,
        log_dir=settings.home / "logs" / "mcp",
        sandbox=sandbox,
        stdio=stdio,
        addresses=addresses,
        max_response_bytes=settings.mcp_max_response_bytes,
    )
    servers = McpServers(
        db,
        connections,
        stdio=stdio,
        addresses=addresses,
        default_return_char_limit=settings.default_return_char_limit,
        schema_max_bytes=settings.tool_schema_max_bytes,
        max_per_org=settings.mcp_max_servers_per_org,
    )
    peers = Peers(settings)
    environments = AgentEnvironments(db, AgentDirectory(peers))
    packages = PackageEnvironments(
        settings.home / "sandbox" / "packages",
        find_links=settings.sandbox_pip_find_links.split(),
        index_url=settings.sandbox_pip_index_url,
        offline=settings.sandbox_pip_offline,
        timeout=settings.sandbox_pip_timeout_seconds,
    )
    executor = ToolExecutor(
        registry,
        environments,
        packages,
        sandbox,
        servers,
        connections,
        limits=SandboxLimits(
            timeout_seconds=settings.sandbox_timeout_seconds,
            memory_bytes=settings.sandbox_memory_mb * MB,
            processes=settings.sandbox_max_processes,
            file_bytes=settings.sandbox_max_file_mb * MB,
            workdir_bytes=settings.sandbox_workdir_mb * MB,
            output_bytes=settings.sandbox_max_output_bytes,
            kept_output_bytes=settings.sandbox_kept_output_bytes,
        ),
        max_timeout_seconds=settings.sandbox_max_timeout_seconds,
        mcp_timeout_seconds=settings.mcp_timeout_seconds,
        argument_check_seconds=settings.argument_check_seconds,
    )
    return ToolsApp(db, registry, executor, environments, servers, sandbox, connections, peers)
