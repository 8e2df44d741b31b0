"""`mnemo sources`: create sources, upload files with progress bars (bytes sent, then processing)."""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mnemo.cli.common import ApiKeyOption, JsonOption, UrlOption, connected, fail, print_json, print_table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from mnemo.client import Mnemo
    from mnemo.rest.sources import Job

app = typer.Typer(help="Create sources and upload files for agents to search.", no_args_is_help=True)
# What the server parses; anything else is sent as octet-stream and refused there with a clear reason.
CONTENT_TYPES = {
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".html": "text/html",
    ".pdf": "application/pdf",
}
POLL_SECONDS = 0.25


@app.command("create")
def sources_create(
    name: str = typer.Argument(help="The source's name."),
    description: str = typer.Option("", help="What the files are about."),
    embedding_model: str = typer.Option("", help="provider/model; empty: the server default."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a source; prints its id."""
    with connected(url, api_key) as client:
        source = client.sources.create(name, description=description, embedding_model=embedding_model)
    if as_json:
        print_json(source)
    else:
        typer.echo(source.id)


@app.command("list")
def sources_list(
    url: str = UrlOption, api_key: str | None = ApiKeyOption, as_json: bool = JsonOption
) -> None:
    """List sources (every page)."""
    with connected(url, api_key) as client:
        sources = list(client.sources.list(limit=200).auto_paging_iter())
    if as_json:
        print_json(sources)
    else:
        print_table(sources, ["id", "name", "embedding_model", "agent_ids"])


@app.command("delete")
def sources_delete(
    source_id: str = typer.Argument(help="The source to delete, with its files and passages."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Delete a source."""
    with connected(url, api_key) as client:
        client.sources.delete(source_id)
    typer.echo(f"deleted {source_id}")


def _content_type(path: Path) -> str:
    return (
        CONTENT_TYPES.get(path.suffix.lower())
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream"
    )


def _bytes_sent(bar: Progress, task: TaskID) -> Callable[[int, int], None]:
    def update(sent: int, total: int) -> None:
        bar.update(task, completed=sent, total=total)

    return update


def _wait(client: Mnemo, job: Job, progress: Progress | None, task: TaskID | None, timeout: float) -> Job:
    deadline = time.monotonic() + timeout
    while job.status not in ("completed", "failed"):
        if time.monotonic() >= deadline:
            raise fail(f"job {job.id} not done after {timeout:.0f} s (still {job.status})")
        time.sleep(POLL_SECONDS)
        job = client.sources.job(job.id)
        if progress is not None and task is not None and job.chunks_total:
            progress.update(task, total=job.chunks_total, completed=job.chunks_done)
    return job


@app.command("upload")
def sources_upload(
    source_id: str = typer.Argument(help="The source to add the files to."),
    files: list[Path] = typer.Argument(help="Files: txt, md, html, pdf."),
    wait: bool = typer.Option(True, help="Wait until each file is processed (chunked and embedded)."),
    timeout: float = typer.Option(600.0, help="Seconds to wait for each file's processing."),
    url: str = UrlOption,
    api_key: str | None = ApiKeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Upload files to a source: a progress bar of the bytes sent, then of the chunks processed."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    from mnemo.cli.common import console

    for path in files:
        if not path.is_file():
            raise fail(f"{path}: no such file")
    out = console()
    show = not as_json and out.is_terminal
    jobs: list[Job] = []
    failed = False
    with connected(url, api_key) as client:
        client.sources.get(source_id)  # an unknown source fails before any upload
        for path in files:
            content = path.read_bytes()
            upload_bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=out,
                transient=False,
                disable=not show,
            )
            with upload_bar:
                sending = upload_bar.add_task(f"upload  {path.name}", total=len(content))
                uploaded = client.sources.upload(
                    source_id,
                    content,
                    file_name=path.name,
                    content_type=_content_type(path),
                    progress=_bytes_sent(upload_bar, sending),
                )
            job = uploaded.job
            if wait:
                process_bar = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("chunks"),
                    TimeElapsedColumn(),
                    console=out,
                    disable=not show,
                )
                with process_bar:
                    task = process_bar.add_task(f"process {path.name}", total=job.chunks_total or None)
                    job = _wait(client, job, process_bar, task, timeout)
            jobs.append(job)
            failed = failed or job.status == "failed"
            if not as_json:
                detail = f": {job.error}" if job.error else ""
                typer.echo(f"{path.name}: {uploaded.file.id} {job.status} ({job.chunks_done} chunks){detail}")
    if as_json:
        print_json(jobs)
    if failed:
        raise typer.Exit(1)
