"""The `mnemo` command."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mnemo.client import Mnemo

app = typer.Typer(help="mnemo: stateful LLM agents with long-term memory.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """mnemo: stateful LLM agents with long-term memory."""


@app.command()
def server(
    ready_timeout: float = typer.Option(60.0, help="Seconds to wait for every service to be healthy."),
    fork: bool = typer.Option(
        True, help="Fork services from preloaded modules (faster); --no-fork execs each."
    ),
) -> None:
    """Start the whole mesh (agent, memory, tools, llm-gateway, REST gateway) on this machine."""
    started = time.monotonic()
    from mnemo_core.lifecycle import follow_parent

    follow_parent()
    from mnemo.supervisor import (
        Child,
        child_env,
        fork_children,
        start_children,
        stop_children,
        supervise,
        wait_healthy,
    )
    from mnemo_gateway.auth import api_key_file, ensure_api_key
    from mnemo_gateway.settings import GatewaySettings
    from mnemo_llm.configuration import describe_providers
    from mnemo_llm.settings import LlmSettings

    settings = GatewaySettings()
    llm = LlmSettings()
    key = ensure_api_key(settings)
    url = f"http://{settings.http_host}:{settings.http_port}"
    # Forking must happen before the event loop (or any thread) exists.
    forked = fork_children(child_env()) if fork else None

    async def run() -> int:
        children = forked if forked is not None else await start_children(child_env())
        try:
            return await ready_then_supervise(children)
        finally:
            await stop_children(children)

    async def ready_then_supervise(children: list[Child]) -> int:
        try:
            await wait_healthy(settings, url, children, ready_timeout)
        except (RuntimeError, TimeoutError) as exc:
            typer.echo(f"mnemo: {exc}", err=True)
            return 1
        configured = describe_providers(llm)
        provider = "\n               ".join(configured) or (
            "none configured (set OPENAI_API_KEY, ANTHROPIC_API_KEY or MNEMO_OLLAMA_BASE_URL, "
            "or `make run` to install the offline model)"
        )
        key_source = "MNEMO_API_KEY" if settings.api_key else str(api_key_file(settings))
        typer.echo(
            "\n".join(
                [
                    f"mnemo is ready in {time.monotonic() - started:.1f} s",
                    f"  REST API     {url}   (docs: {url}/docs)",
                    f"  API key      {key}   (from {key_source})",
                    *(
                        f"  gRPC {name:<7} {settings.address_of(name)}"
                        for name in ("agent", "memory", "tools", "llm")
                    ),
                    f"  data         {settings.home}",
                    f"  LLM provider {provider}",
                    "Press Ctrl-C to stop.",
                ]
            )
        )
        return await supervise(children)

    sys.exit(asyncio.run(run()))


@app.command()
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


# Client commands. The client is imported inside each command: `mnemo server` starts without loading it.
agents_app = typer.Typer(help="Create, list and delete agents.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
UrlOption = typer.Option(
    "http://127.0.0.1:8283", "--url", envvar="MNEMO_BASE_URL", help="The REST API of the mnemo server."
)
ApiKeyOption = typer.Option(
    None,
    "--api-key",
    envvar="MNEMO_API_KEY",
    help="Default: the key a local server keeps.",
    show_default=False,
)


def _client(url: str, api_key: str | None) -> Mnemo:
    from mnemo.client import Mnemo

    return Mnemo(url, api_key)


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"mnemo: {error}", err=True)
    return typer.Exit(1)


@agents_app.command("list")
def agents_list(
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    limit: int = typer.Option(50, help="At most this many, newest first."),
) -> None:
    """List agents: id, name, model, blocks."""
    from rich.console import Console
    from rich.table import Table

    from mnemo.client import MnemoError

    with _client(url, api_key) as client:
        try:
            page = client.agents.list(limit=limit)
        except MnemoError as exc:
            raise _fail(exc) from exc
    table = Table(box=None)
    # Ids are what the other commands take: never cut them to fit the terminal.
    table.add_column("id", no_wrap=True, min_width=max((len(a.id) for a in page), default=2))
    for column in ("name", "model", "blocks"):
        table.add_column(column)
    for agent in page:
        table.add_row(agent.id, agent.name, agent.model, ", ".join(b.label for b in agent.blocks))
    Console().print(table)


@agents_app.command("create")
def agents_create(
    name: str = typer.Argument(help="The agent's name."),
    model: str = typer.Option(..., help="Chat model as provider/model, e.g. openai/gpt-4o-mini."),
    persona: str = typer.Option("", help="The persona block's value."),
    human: str = typer.Option("", help="The human block's value."),
    system: str = typer.Option("", help="Base system prompt; empty uses the default."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Create an agent with a persona and a human block; prints its id."""
    from mnemo.client import MnemoError

    blocks = [{"label": "persona", "value": persona}, {"label": "human", "value": human}]
    with _client(url, api_key) as client:
        try:
            agent = client.agents.create(name=name, model=model, memory_blocks=blocks, system=system)
        except MnemoError as exc:
            raise _fail(exc) from exc
    typer.echo(agent.id)


@agents_app.command("delete")
def agents_delete(
    agent_id: str = typer.Argument(help="The agent to delete, with its history."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Delete an agent."""
    from mnemo.client import MnemoError

    with _client(url, api_key) as client:
        try:
            client.agents.delete(agent_id)
        except MnemoError as exc:
            raise _fail(exc) from exc
    typer.echo(f"deleted {agent_id}")


@app.command()
def chat(
    agent_id: str = typer.Argument(help="The agent to talk to."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Talk to an agent: its reply streams as it is written, tool calls show in grey. /exit or Ctrl-D ends."""
    from rich.console import Console

    from mnemo.client import MnemoError
    from mnemo.client.models import (
        AssistantMessage,
        ContentDelta,
        StreamStopReason,
        ToolCallMessage,
        ToolReturnMessage,
    )

    console = Console(highlight=False)
    with _client(url, api_key) as client:
        try:
            agent = client.agents.get(agent_id)
        except MnemoError as exc:
            raise _fail(exc) from exc
        console.print(f"[bold]{agent.name}[/bold] ({agent.model}). /exit or Ctrl-D ends.")
        while True:
            try:
                text = console.input("[bold green]you>[/bold green] ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if text in ("/exit", "/quit"):
                break
            if not text:
                continue
            streamed = False
            try:
                for event in client.messages.stream(agent_id, text, stream_tokens=True):
                    if isinstance(event, ContentDelta):
                        if not streamed:
                            console.print(f"[bold]{agent.name}>[/bold] ", end="")
                            streamed = True
                        console.print(event.content, end="", markup=False)
                    elif isinstance(event, AssistantMessage):
                        if streamed:
                            console.print()
                        else:
                            console.print(f"[bold]{agent.name}>[/bold] ", end="")
                            console.print(event.content, markup=False)
                        streamed = False
                    elif isinstance(event, ToolCallMessage):
                        call = event.tool_call
                        console.print(
                            f"  -> {call.name}({_short(call.arguments)})", style="dim", markup=False
                        )
                    elif isinstance(event, ToolReturnMessage):
                        mark = "<-" if event.status == "success" else "<- error:"
                        console.print(f"  {mark} {_short(event.tool_return)}", style="dim", markup=False)
                    elif isinstance(event, StreamStopReason) and event.stop_reason != "end_turn":
                        console.print(f"  (stopped: {event.stop_reason})", style="dim", markup=False)
            except MnemoError as exc:
                console.print(f"error: {exc}", style="red", markup=False)


def _short(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def main() -> None:
    """Entry point of the `mnemo` script."""
    app()


if __name__ == "__main__":
    main()
