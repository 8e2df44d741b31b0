"""The `mnemo` command: the client's commands, plus those other installed distributions add.

One module per group of commands (agents, chat, tools, sources, admin: keys, users, orgs, usage, models). The
server distribution adds `mnemo server` and `mnemo providers` through the `mnemo.cli` entry point group (each
entry is a function that takes this Typer app); without it, `mnemo server` says what to install. The client
is imported inside each command: `mnemo server` starts without loading it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from mnemo.cli import admin, agents, chat, sources, tools

app = typer.Typer(help="mnemo: stateful LLM agents with long-term memory.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """mnemo: stateful LLM agents with long-term memory."""


app.add_typer(agents.app, name="agents")
app.add_typer(tools.app, name="tools")
app.add_typer(sources.app, name="sources")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.users_app, name="users")
app.add_typer(admin.orgs_app, name="orgs")
app.command("chat")(chat.chat)
app.command("usage")(admin.usage)
app.command("models")(admin.models)


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
