"""`mnemo server` and `mnemo providers`: the commands the server distribution adds to the client's `mnemo`.

Registered through the `mnemo.cli` entry point group; the client's command loads them when this distribution
is installed. Everything heavy is imported inside the commands, so the client commands start as fast without it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mnemo_server.supervisor import Child


def register(app: typer.Typer) -> None:
    """Adds the server's commands to `app`."""
    app.command()(server)
    app.command()(providers)
    app.command()(migrate)


def server(
    ready_timeout: float = typer.Option(
        60.0, help="Seconds to wait for every service to be healthy (restarts of those that die included)."
    ),
    fork: bool = typer.Option(
        True, help="Fork services from preloaded modules (faster); --no-fork execs each."
    ),
    crash_loop: int = typer.Option(
        5,
        min=1,
        help="Give up (stop the mesh) when a service dies this many times in a row soon after starting.",
    ),
    settle: float = typer.Option(
        1.0, min=0.0, help="Seconds a restarted service must stay up for its start to count as a success."
    ),
) -> None:
    """Start the whole mesh (agent, memory, tools, llm-gateway, REST gateway) on this machine."""
    started = time.monotonic()
    from mnemo_core.lifecycle import follow_parent

    follow_parent()
    from mnemo_gateway.auth import api_key_file, ensure_api_key
    from mnemo_gateway.settings import GatewaySettings
    from mnemo_llm.configuration import describe_providers
    from mnemo_llm.settings import LlmSettings
    from mnemo_server.supervisor import (
        RestartPolicy,
        child_env,
        fork_children,
        mesh_probe,
        start_children,
        stop_children,
        supervise,
        wait_healthy,
    )

    settings = GatewaySettings()
    llm = LlmSettings()
    key = ensure_api_key(settings)
    url = settings.http_url
    # Each service drains for up to its grace period; the supervisor kills what is left a little later.
    grace = settings.shutdown_grace + 5.0
    # One machine, one user: the services may trust that user as their operator (stdio MCP servers).
    env = child_env(
        {
            "MNEMO_SINGLE_USER": os.environ.get("MNEMO_SINGLE_USER", "true"),
            # Every service signs and checks internal hops with this one (config file or generated key).
            "MNEMO_INTERNAL_TOKEN": settings.internal_credential(),
        }
    )
    # Forking must happen before the event loop (or any thread) exists.
    forked = fork_children(env) if fork else None

    async def run() -> int:
        children = forked if forked is not None else await start_children(env)
        # Supervised from the start: a service that dies before the mesh is first up is restarted too.
        policy = RestartPolicy(settle=settle, crash_loop=crash_loop)
        try:
            return await supervise(
                children, env, mesh_probe(settings, url), policy, grace, ready=lambda: ready(children)
            )
        finally:
            await stop_children(children, grace)

    async def ready(children: list[Child]) -> None:
        await wait_healthy(settings, url, children, ready_timeout, restarted=True)
        configured = describe_providers(llm)
        provider = "\n               ".join(configured) or (
            "none configured (set OPENAI_API_KEY, ANTHROPIC_API_KEY or MNEMO_OLLAMA_BASE_URL, "
            "or `make run` to install the offline model)"
        )
        traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "off (set OTEL_EXPORTER_OTLP_ENDPOINT, or `make traces`)"
        )
        key_source = "MNEMO_API_KEY" if settings.api_key else str(api_key_file(settings))
        typer.echo(
            "\n".join(
                [
                    f"mnemo is ready in {time.monotonic() - started:.1f} s",
                    f"  REST API     {url}   (docs: {url}/docs)",
                    f"  API key      {key}   (from {key_source})",
                    *(
                        [f"  gRPC         {settings.http_host}:{settings.grpc_port}   (every service)"]
                        if settings.grpc_port
                        else []
                    ),
                    f"  metrics      {url}/metrics (gateway)",
                    *(
                        f"               http://{settings.grpc_host}:{settings.metrics_port_of(name)}/metrics ({name})"
                        for name in ("agent", "memory", "tools", "llm")
                        if settings.metrics_port_of(name)
                    ),
                    f"  traces       {traces}",
                    f"  data         {settings.home}",
                    f"  LLM provider {provider}",
                    "Press Ctrl-C to stop.",
                ]
            )
        )

    sys.exit(asyncio.run(run()))


def providers(
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing; only the exit code."),
) -> None:
    """List the model providers the configuration sets up; exit code 1 when there is none."""
    from mnemo_llm.configuration import describe_providers
    from mnemo_llm.settings import LlmSettings

    configured = describe_providers(LlmSettings())
    if not quiet:
        typer.echo("\n".join(configured) if configured else "no model provider configured")
    raise typer.Exit(0 if configured else 1)


def migrate(
    service: str = typer.Argument(..., help="agent, memory, tools or llm."),
) -> None:
    """Bring one service's database schema to this release's revision (a cluster's migration job)."""
    from mnemo_server.migrate import run

    raise typer.Exit(run(service))
