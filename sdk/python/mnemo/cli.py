"""The `mnemo` command: the client's commands, plus those other installed distributions add.

The server distribution adds `mnemo server` and `mnemo providers` through the `mnemo.cli` entry point group
(each entry is a function that takes this Typer app); without it, `mnemo server` says what to install.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mnemo.client import Mnemo

app = typer.Typer(help="mnemo: stateful LLM agents with long-term memory.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """mnemo: stateful LLM agents with long-term memory."""


# The client is imported inside each command: `mnemo server` starts without loading it.
agents_app = typer.Typer(help="Create, list, delete, export and import agents.", no_args_is_help=True)
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


@agents_app.command("export")
def agents_export(
    agent_id: str = typer.Argument(help="The agent to export."),
    output: str = typer.Option("-", "--output", "-o", help="File to write; '-' writes to standard output."),
    include_passages: bool = typer.Option(False, "--archival", help="Include the archival passages."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Export an agent as an agent file (JSON): configuration, memory, tools, rules, history."""
    from mnemo.client import MnemoError

    with _client(url, api_key) as client:
        try:
            document = client.agents.export(agent_id, include_passages=include_passages)
        except MnemoError as exc:
            raise _fail(exc) from exc
    if output == "-":
        typer.echo(document)
    else:
        with open(output, "w", encoding="utf-8") as file:
            file.write(document)
        typer.echo(f"exported {agent_id} to {output}", err=True)


@agents_app.command("import")
def agents_import(
    path: str = typer.Argument(help="The agent file to import ('-' reads standard input)."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Import an agent file: its agents are created anew; prints the new agent's id."""
    import sys

    from mnemo.client import MnemoError

    if path == "-":
        document = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as file:
            document = file.read()
    with _client(url, api_key) as client:
        try:
            agent = client.agents.import_file(document)
        except MnemoError as exc:
            raise _fail(exc) from exc
    typer.echo(agent.id)


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


def _add_installed_commands() -> None:
    for entry in entry_points(group="mnemo.cli"):
        entry.load()(app)
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    if "server" not in names:

        @app.command()
        def server() -> None:
            """Start the whole mesh: needs the server distribution (`pip install mnemo-server`)."""
            typer.echo(
                "mnemo: `mnemo server` needs the server distribution: pip install mnemo-server", err=True
            )
            raise typer.Exit(1)


_add_installed_commands()


def main() -> None:
    """Entry point of the `mnemo` script."""
    app()


if __name__ == "__main__":
    main()
