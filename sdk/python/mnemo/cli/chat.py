"""`mnemo chat AGENT`: a conversation at the terminal, the reply streamed as the model writes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mnemo.cli.common import ApiKeyOption, UrlOption, connected, console, short

if TYPE_CHECKING:
    from rich.console import Console

    from mnemo.client import Mnemo
    from mnemo.client.models import Agent

HELP = (
    "/memory shows the core memory blocks, /archival QUERY searches archival memory, "
    "/help shows this, /exit (or Ctrl-D) ends."
)


def chat(
    agent_id: str = typer.Argument(help="The agent to talk to."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Talk to an agent: its reply streams as it is written, tool calls and returns show in grey.

    /memory shows its core memory, /archival QUERY searches its archival memory, /exit or Ctrl-D ends.
    """
    from mnemo.client import MnemoError

    out = console()
    with connected(url, api_key) as client:
        agent = client.agents.get(agent_id)
        out.print(f"[bold]{agent.name}[/bold] ({agent.model}). {HELP}", highlight=False)
        while True:
            try:
                text = out.input("[bold green]you>[/bold green] ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if text in ("/exit", "/quit"):
                break
            if not text:
                continue
            try:
                if text.startswith("/"):
                    _command(client, agent, text, out)
                else:
                    _turn(client, agent, text, out)
            except MnemoError as exc:
                out.print(f"error: {exc}", style="red", markup=False)


def _command(client: Mnemo, agent: Agent, text: str, out: Console) -> None:
    name, _, argument = text.partition(" ")
    if name == "/memory":
        for block in client.blocks.list(agent.id):
            out.print(f"[bold]{block.label}[/bold] ({len(block.value)}/{block.limit} chars)")
            out.print(block.value or "(empty)", markup=False)
    elif name == "/archival":
        if not argument.strip():
            out.print("usage: /archival QUERY", style="yellow")
            return
        results = client.archival.search(agent.id, argument.strip(), top_k=5).results
        if not results:
            out.print("no passages found", style="dim")
        for hit in results:
            out.print(f"  {hit.score.score:.3f}  {short(hit.passage.text)}", markup=False)
    elif name == "/help":
        out.print(HELP)
    else:
        out.print(f"unknown command {name}. {HELP}", style="yellow", markup=False)


def _turn(client: Mnemo, agent: Agent, text: str, out: Console) -> None:
    from mnemo.client.models import (
        AssistantMessage,
        ContentDelta,
        StreamStopReason,
        ToolCallMessage,
        ToolReturnMessage,
    )

    streamed = False
    for event in client.messages.stream(agent.id, text, stream_tokens=True):
        if isinstance(event, ContentDelta):
            if not streamed:
                out.print(f"[bold]{agent.name}>[/bold] ", end="")
                streamed = True
            out.print(event.content, end="", markup=False)
        elif isinstance(event, AssistantMessage):
            if streamed:
                out.print()
            else:
                out.print(f"[bold]{agent.name}>[/bold] ", end="")
                out.print(event.content, markup=False)
            streamed = False
        elif isinstance(event, ToolCallMessage):
            call = event.tool_call
            out.print(f"  -> {call.name}({short(call.arguments)})", style="dim", markup=False)
        elif isinstance(event, ToolReturnMessage):
            mark = "<-" if event.status == "success" else "<- error:"
            out.print(f"  {mark} {short(event.tool_return)}", style="dim", markup=False)
        elif isinstance(event, StreamStopReason) and event.stop_reason != "end_turn":
            out.print(f"  (stopped: {event.stop_reason})", style="dim", markup=False)
