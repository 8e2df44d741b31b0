"""`mnemo tools`: add a Python file as a tool, list tools, run one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mnemo.cli.common import (
    ApiKeyOption,
    JsonOption,
    UrlOption,
    connected,
    console,
    fail,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from mnemo.client import Mnemo
    from mnemo.rest.tools import Tool

app = typer.Typer(help="Add, list and run tools.", no_args_is_help=True)


@app.command("add")
def tools_add(
    file: Path = typer.Argument(help="A Python file defining one typed function with a docstring."),
    tag: list[str] = typer.Option([], "--tag", help="A tag (repeatable)."),
    requirement: list[str] = typer.Option(
        [], "--requirement", "-r", help="A pip requirement, e.g. humanize==4.9.0 (repeatable)."
    ),
    timeout: int = typer.Option(0, help="Seconds a run may take; 0: the server default."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a tool from a Python file; prints its id and name."""
    try:
        source = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from exc
    with connected(url, api_key) as client:
        tool = client.tools.create(source, tags=tag, pip_requirements=requirement, timeout_seconds=timeout)
    if as_json:
        print_json(tool)
    else:
        typer.echo(f"{tool.id} {tool.name}")


@app.command("list")
def tools_list(
    tool_type: str = typer.Option("", "--type", help="Only this type: custom, mcp, memory or control."),
    agent: str = typer.Option("", help="Only the tools of this agent."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """List tools (every page): id, name, type, description."""
    if tool_type not in ("", "custom", "mcp", "memory", "control"):
        raise fail(f"unknown tool type {tool_type!r}: custom, mcp, memory or control")
    with connected(url, api_key) as client:
        if agent:
            tools = client.tools.list_for_agent(agent)
        else:
            tools = list(client.tools.list(limit=200, tool_type=tool_type or None).auto_paging_iter())  # type: ignore[arg-type]
    if as_json:
        print_json(tools)
    else:
        print_table(tools, ["id", "name", "tool_type", "description"], ids=("id", "name"))


def _arguments(args_json: str, pairs: list[str]) -> dict[str, Any]:
    try:
        arguments = json.loads(args_json) if args_json else {}
    except json.JSONDecodeError as exc:
        raise fail(f"--args is not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise fail("--args must be a JSON object")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise fail(f"--arg {pair!r}: expected NAME=VALUE")
        try:
            arguments[name] = json.loads(value)  # numbers, booleans, lists
        except json.JSONDecodeError:
            arguments[name] = value  # anything else is a string
    return arguments


def _find(client: Mnemo, tool: str) -> Tool:
    from mnemo.client import NotFound

    try:
        return client.tools.get(tool)
    except NotFound:
        named = client.tools.list(names=[tool], limit=1).items
        if not named:
            raise fail(f"no tool with the id or name {tool!r}") from None
        return named[0]


@app.command("run")
def tools_run(
    tool: str = typer.Argument(help="The tool's id or name."),
    arg: list[str] = typer.Option(
        [], "--arg", "-a", help="An argument NAME=VALUE (repeatable; JSON values)."
    ),
    args_json: str = typer.Option("", "--args", help="All arguments as a JSON object."),
    agent: str = typer.Option("", help="Run on behalf of this agent (its tool environment)."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a tool directly and print what it returns; exit code 1 when the tool failed."""
    arguments = _arguments(args_json, arg)
    with connected(url, api_key) as client:
        found = _find(client, tool)
        result = client.tools.run(found.id, arguments, agent_id=agent)
    if as_json:
        print_json(result)
    else:
        out = console()
        if result.stdout:
            out.print(result.stdout.rstrip(), style="dim", markup=False)
        style = None if result.status == "success" else "red"
        out.print(result.content, style=style, markup=False)
        out.print(f"({result.status}, {result.duration_seconds:.2f} s)", style="dim", markup=False)
    if result.status != "success":
        raise typer.Exit(1)


@app.command("delete")
def tools_delete(
    tool: str = typer.Argument(help="The tool's id or name."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Delete a custom tool (agents that have it lose it)."""
    with connected(url, api_key) as client:
        found = _find(client, tool)
        client.tools.delete(found.id)
    typer.echo(f"deleted {found.id} {found.name}")
