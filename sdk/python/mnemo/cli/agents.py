"""`mnemo agents`: create, list, show, delete, export and import agents."""

from __future__ import annotations

import sys

import typer

from mnemo.cli.common import ApiKeyOption, JsonOption, UrlOption, connected, console, print_json, print_table

app = typer.Typer(help="Create, list, show, delete, export and import agents.", no_args_is_help=True)


@app.command("list")
def agents_list(
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    limit: int = typer.Option(50, help="At most this many, newest first."),
    all_pages: bool = typer.Option(False, "--all", help="Every agent, page after page."),
    tag: list[str] = typer.Option([], "--tag", help="Only agents with this tag (repeatable)."),
    as_json: bool = JsonOption,
) -> None:
    """List agents: id, name, model, blocks."""
    with connected(url, api_key) as client:
        page = client.agents.list(limit=limit, tags=tag)
        agents = list(page.auto_paging_iter()) if all_pages else page.items
    if as_json:
        print_json(agents)
        return
    from rich.table import Table

    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=max((len(a.id) for a in agents), default=2))
    for column in ("name", "model", "blocks"):
        table.add_column(column)
    for agent in agents:
        table.add_row(agent.id, agent.name, agent.model, ", ".join(b.label for b in agent.blocks))
    console().print(table)


@app.command("create")
def agents_create(
    name: str = typer.Argument(help="The agent's name."),
    model: str = typer.Option(..., help="Chat model as provider/model, e.g. openai/gpt-4o-mini."),
    persona: str = typer.Option("", help="The persona block's value."),
    human: str = typer.Option("", help="The human block's value."),
    system: str = typer.Option("", help="Base system prompt; empty uses the default."),
    tool: list[str] = typer.Option([], "--tool", help="A tool id to attach (repeatable)."),
    tag: list[str] = typer.Option([], "--tag", help="A tag (repeatable)."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Create an agent with a persona and a human block; prints its id."""
    blocks = [{"label": "persona", "value": persona}, {"label": "human", "value": human}]
    with connected(url, api_key) as client:
        agent = client.agents.create(
            name=name, model=model, memory_blocks=blocks, system=system, tool_ids=tool, tags=tag
        )
    if as_json:
        print_json(agent)
    else:
        typer.echo(agent.id)


@app.command("show")
def agents_show(
    agent_id: str = typer.Argument(help="The agent to show."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Show an agent: configuration, core memory blocks and tools."""
    with connected(url, api_key) as client:
        agent = client.agents.get(agent_id)
        tools = client.tools.list_for_agent(agent_id)
    if as_json:
        print_json(agent.model_dump(mode="json") | {"tools": [t.model_dump(mode="json") for t in tools]})
        return
    out = console()
    out.print(f"[bold]{agent.name}[/bold]  {agent.id}")
    for label, value in (
        ("model", agent.model),
        ("embedding", agent.embedding_model),
        ("description", agent.description),
        ("tags", ", ".join(agent.tags)),
    ):
        if value:
            out.print(f"  {label}: {value}", markup=False)
    out.print("[bold]core memory[/bold]")
    print_table(agent.blocks, ["label", "value", "limit"], ids=("label",))
    out.print("[bold]tools[/bold]")
    print_table(tools, ["name", "tool_type", "description"], ids=("name",))


@app.command("delete")
def agents_delete(
    agent_id: str = typer.Argument(help="The agent to delete, with its history."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Delete an agent."""
    with connected(url, api_key) as client:
        client.agents.delete(agent_id)
    typer.echo(f"deleted {agent_id}")


@app.command("export")
def agents_export(
    agent_id: str = typer.Argument(help="The agent to export."),
    output: str = typer.Option("-", "--output", "-o", help="File to write; '-' writes to standard output."),
    include_passages: bool = typer.Option(False, "--archival", help="Include the archival passages."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Export an agent as an agent file (JSON): configuration, memory, tools, rules, history."""
    with connected(url, api_key) as client:
        document = client.agents.export(agent_id, include_passages=include_passages)
    if output == "-":
        typer.echo(document)
    else:
        with open(output, "w", encoding="utf-8") as file:
            file.write(document)
        typer.echo(f"exported {agent_id} to {output}", err=True)


@app.command("import")
def agents_import(
    path: str = typer.Argument(help="The agent file to import ('-' reads standard input)."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Import an agent file: its agents are created anew; prints the new agent's id."""
    if path == "-":
        document = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as file:
            document = file.read()
    with connected(url, api_key) as client:
        agent = client.agents.import_file(document)
    if as_json:
        print_json(agent)
    else:
        typer.echo(agent.id)
