"""What every client command shares: where the server is, the key, `--json` output, errors as exit code 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from mnemo.client import Mnemo

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
JsonOption = typer.Option(False, "--json", help="Print JSON (for scripts) instead of a table.")


@contextmanager
def connected(url: str, api_key: str | None) -> Iterator[Mnemo]:
    """A client; an API error inside becomes `mnemo: <error>` on stderr and exit code 1."""
    import httpx

    from mnemo.client import Mnemo, MnemoError

    with Mnemo(url, api_key) as client:
        try:
            yield client
        except MnemoError as exc:
            raise fail(str(exc)) from exc
        except httpx.TransportError as exc:
            raise fail(
                f"cannot reach {url}: {exc or type(exc).__name__} (is `mnemo server` running?)"
            ) from exc


def fail(message: str) -> typer.Exit:
    """Prints `mnemo: message` on stderr; raise what it returns."""
    typer.echo(f"mnemo: {message}", err=True)
    return typer.Exit(1)


def console() -> Console:
    """A console for tables and progress (no syntax highlighting of ids and numbers)."""
    from rich.console import Console

    return Console(highlight=False)


def to_json(value: Any) -> Any:
    """Models (and lists of them) as JSON-ready values."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(to_json(value), indent=2, ensure_ascii=False) + "\n")


def print_table(rows: Iterable[BaseModel], columns: Sequence[str], *, ids: Sequence[str] = ("id",)) -> None:
    """Rows of models as a table of the given fields; id columns are never cut to fit the terminal."""
    from rich.table import Table

    materialized = list(rows)
    table = Table(box=None)
    for column in columns:
        values = [_cell(getattr(row, column, "")) for row in materialized]
        if column in ids:
            table.add_column(column, no_wrap=True, min_width=max((len(v) for v in values), default=2))
        else:
            table.add_column(column)
    for row in materialized:
        table.add_row(*(_cell(getattr(row, column, "")) for column in columns))
    console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def short(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
