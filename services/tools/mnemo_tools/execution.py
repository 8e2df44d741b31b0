"""Running a tool: custom tools in the sandbox, MCP tools on their server. Failures are results, not errors."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mnemo_core.actor import Actor
from mnemo_core.errors import FailedPrecondition
from mnemo_core.metrics import duration_histogram, meter
from mnemo_core.telemetry import tracer
from mnemo_core.tool_calls import ArgumentsInvalid, fit_result, parse_arguments
from mnemo_tools.agent_env import AgentEnvironments
from mnemo_tools.argument_checks import argument_problems
from mnemo_tools.environments import PackageEnvironments, RequirementsUnavailable
from mnemo_tools.mcp_connections import McpConnections, McpFailure
from mnemo_tools.mcp_servers import McpServers
from mnemo_tools.registry import Registry
from mnemo_tools.sandbox.runner import SandboxJob, SandboxLimits, SandboxRunner
from mnemo_tools.store import Tool

log = logging.getLogger(__name__)
_tracer = tracer(__name__)
_meter = meter("mnemo.tools")
_runs = _meter.create_counter(
    "mnemo.tools.runs", unit="{run}", description="Tool runs, by outcome (ok, error, refused)."
)
_run_duration = duration_histogram(_meter, "mnemo.tools.run.duration", "Duration of tool runs, by outcome.")


@dataclass(frozen=True, slots=True)
class RunResult:
    """What RunTool returns."""

    content: str
    ok: bool
    stdout: str = ""
    stderr: str = ""
    duration_seconds: float = 0.0


def _error(text: str, started: float, stdout: str = "", stderr: str = "") -> RunResult:
    return RunResult(
        content=f"Error: {text}",
        ok=False,
        stdout=stdout,
        stderr=stderr,
        duration_seconds=time.monotonic() - started,
    )


class ToolExecutor:
    """Runs tools for RunTool."""

    def __init__(
        self,
        registry: Registry,
        environments: AgentEnvironments,
        packages: PackageEnvironments,
        sandbox: SandboxRunner,
        servers: McpServers,
        connections: McpConnections,
        *,
        limits: SandboxLimits,
        max_timeout_seconds: float,
        mcp_timeout_seconds: float,
        argument_check_seconds: float,
    ) -> None:
        self._registry = registry
        self._environments = environments
        self._packages = packages
        self._sandbox = sandbox
        self._servers = servers
        self._connections = connections
        self._limits = limits
        self._max_timeout = max_timeout_seconds
        self._mcp_timeout = mcp_timeout_seconds
        self._argument_check_seconds = argument_check_seconds

    async def run(
        self, actor: Actor, tool_id: str, arguments_json: str, agent_id: str = "", run_id: str = ""
    ) -> RunResult:
        """Runs a tool with the model's arguments, on behalf of `agent_id` in its run `run_id` (may be empty)."""
        started = time.perf_counter()
        try:
            result = await self._run(actor, tool_id, arguments_json, agent_id, run_id)
        except BaseException:
            _runs.add(1, {"outcome": "refused"})
            raise
        outcome = "ok" if result.ok else "error"
        _runs.add(1, {"outcome": outcome})
        _run_duration.record(time.perf_counter() - started, {"outcome": outcome})
        return result

    async def _run(
        self, actor: Actor, tool_id: str, arguments_json: str, agent_id: str, run_id: str
    ) -> RunResult:
        org_id = actor.org_id
        tool = await self._registry.get(org_id, tool_id)
        if tool.tool_type not in ("custom", "mcp"):
            raise FailedPrecondition(
                f"'{tool.name}' is a {tool.tool_type} tool; the agent runs it itself",
                reason="TOOL_NOT_RUNNABLE_HERE",
            )
        started = time.monotonic()
        with _tracer.start_as_current_span(
            "tools.run", attributes={"tool.id": tool.id, "tool.name": tool.name, "tool.type": tool.tool_type}
        ) as span:
            try:
                arguments = parse_arguments(arguments_json)
            except ArgumentsInvalid as exc:
                return _error(str(exc), started)
            problems = await argument_problems(tool.json_schema, arguments, self._argument_check_seconds)
            if problems:
                return _error(f"invalid arguments for '{tool.name}': " + "; ".join(problems), started)
            if tool.tool_type == "custom":
                env = await self._environments.for_run(actor, agent_id, tool.id, run_id)
                result = await self._run_custom(org_id, tool, arguments, env, started)
            else:
                result = await self._run_mcp(org_id, tool, arguments, started)
            span.set_attribute("tool.ok", result.ok)
            return result

    async def _run_custom(
        self, org_id: str, tool: Tool, arguments: dict[str, Any], env: dict[str, str], started: float
    ) -> RunResult:
        self._sandbox.check_runnable()
        site_dirs: tuple[str, ...] = ()
        if tool.pip_requirements:
            try:
                site_dirs = (await self._packages.site_dir(tool.pip_requirements),)
            except RequirementsUnavailable as exc:
                return _error(f"the tool's requirements are not available: {exc}", started)
        timeout = float(tool.timeout_seconds or self._limits.timeout_seconds)
        limits = SandboxLimits(
            timeout_seconds=min(timeout, self._max_timeout),
            memory_bytes=self._limits.memory_bytes,
            processes=self._limits.processes,
            file_bytes=self._limits.file_bytes,
            workdir_bytes=self._limits.workdir_bytes,
            output_bytes=self._limits.output_bytes,
            kept_output_bytes=self._limits.kept_output_bytes,
        )
        outcome = await self._sandbox.run(
            SandboxJob(
                source=tool.source_code,
                function=tool.name,
                arguments=arguments,
                env=env,
                limits=limits,
                return_chars=tool.return_char_limit,
                is_async=tool.is_async,
                site_dirs=site_dirs,
            ),
            org_id,
        )
        if not outcome.ok:
            return RunResult(
                content=fit_result(f"Error: {outcome.error}", tool.return_char_limit),
                ok=False,
                stdout=outcome.stdout,
                stderr=outcome.stderr,
                duration_seconds=time.monotonic() - started,
            )
        return RunResult(
            content=fit_result(outcome.text, tool.return_char_limit, outcome.length),
            ok=True,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            duration_seconds=time.monotonic() - started,
        )

    async def _run_mcp(self, org_id: str, tool: Tool, arguments: dict[str, Any], started: float) -> RunResult:
        endpoint = await self._servers.endpoint(org_id, tool.mcp_server_id)
        try:
            result = await self._connections.call_tool(
                endpoint, tool.mcp_tool_name or tool.name, arguments, self._mcp_timeout
            )
        except McpFailure as exc:
            return _error(str(exc), started)
        text = fit_result(result.text, tool.return_char_limit)
        return RunResult(
            content=fit_result(f"Error: {text}", tool.return_char_limit) if result.is_error else text,
            ok=not result.is_error,
            duration_seconds=time.monotonic() - started,
        )
