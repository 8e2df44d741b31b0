"""Sources and files: collections of documents whose text agents can search.

An upload stores the file's bytes, a file row and a pending job in one transaction; `FileJobs`
then parses, chunks and embeds it in the background, committing progress batch by batch. A job
interrupted by a restart is resumed: from its stored chunks if the file was parsed, else from
the kept bytes. Deleting a file or a source deletes its passages in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from mnemo_core.actor import Actor, acting_as
from mnemo_core.db import Database, table_of
from mnemo_core.errors import AlreadyExists, MnemoError, NotFound, Unavailable
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow
from mnemo_memory.chunking import chunk_text
from mnemo_memory.embedding import Embedder
from mnemo_memory.files import FileParser, FileUnreadable, check_text_content, content_type_of
from mnemo_memory.models import FileContentRow, FileRow, JobRow, SourceAttachmentRow, SourceRow
from mnemo_memory.passage_store import NewPassage, PassageStore, Scope, passages_t

log = logging.getLogger(__name__)

sources_t = table_of(SourceRow)
attachments_t = table_of(SourceAttachmentRow)
files_t = table_of(FileRow)
contents_t = table_of(FileContentRow)
jobs_t = table_of(JobRow)

PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
UPDATABLE_FIELDS = frozenset({"name", "description", "metadata"})
EMBED_BATCH = 64
MAX_EMBED_RETRIES = 5
JOB_USER = "mnemo-memory-jobs"


@dataclass(frozen=True, slots=True)
class Source:
    """A source as callers see it."""

    id: str
    name: str
    description: str
    embedding_model: str
    embedding_dim: int
    metadata: dict[str, Any]
    agent_ids: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Job:
    """The processing of one file."""

    id: str
    file_id: str
    source_id: str
    status: str
    chunks_total: int
    chunks_done: int
    error: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @property
    def progress(self) -> float:
        if self.status == COMPLETED:
            return 1.0
        return self.chunks_done / self.chunks_total if self.chunks_total else 0.0


@dataclass(frozen=True, slots=True)
class File:
    """A file of a source with the state of its job."""

    id: str
    source_id: str
    file_name: str
    content_type: str
    size_bytes: int
    created_at: datetime
    job: Job


def _not_found(kind: str, value: str) -> NotFound:
    return NotFound(
        f"{kind} {value} not found", reason=f"{kind.upper()}_NOT_FOUND", metadata={f"{kind}_id": value}
    )


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        file_id=row.file_id,
        source_id=row.source_id,
        status=row.status,
        chunks_total=row.chunks_total,
        chunks_done=row.chunks_done,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )


class SourceQueries:
    """Source, file and job SQL on one connection."""

    @staticmethod
    def source(conn: Connection, org_id: str, source_id: str) -> Source:
        row = conn.execute(
            select(sources_t).where(sources_t.c.id == source_id, sources_t.c.org_id == org_id)
        ).first()
        if row is None:
            raise _not_found("source", source_id)
        agents = list(
            conn.scalars(
                select(attachments_t.c.agent_id)
                .where(attachments_t.c.source_id == source_id)
                .order_by(attachments_t.c.created_at, attachments_t.c.agent_id)
            )
        )
        return Source(
            id=row.id,
            name=row.name,
            description=row.description,
            embedding_model=row.embedding_model,
            embedding_dim=row.embedding_dim,
            metadata=dict(row.metadata_json or {}),
            agent_ids=agents,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @staticmethod
    def name_taken(conn: Connection, org_id: str, name: str, *, other_than: str = "") -> bool:
        found = conn.scalar(
            select(sources_t.c.id).where(
                sources_t.c.org_id == org_id, sources_t.c.name == name, sources_t.c.id != other_than
            )
        )
        return found is not None

    @staticmethod
    def job(conn: Connection, org_id: str, job_id: str) -> Job:
        row = conn.execute(select(jobs_t).where(jobs_t.c.id == job_id, jobs_t.c.org_id == org_id)).first()
        if row is None:
            raise _not_found("job", job_id)
        return _job(row)

    @staticmethod
    def files(conn: Connection, org_id: str, where: Any, limit: int) -> list[File]:
        rows = conn.execute(
            select(
                files_t.c.id.label("f_id"),
                files_t.c.source_id.label("f_source_id"),
                files_t.c.file_name,
                files_t.c.content_type,
                files_t.c.size_bytes,
                files_t.c.created_at.label("f_created_at"),
                jobs_t.c.id,
                jobs_t.c.file_id,
                jobs_t.c.source_id,
                jobs_t.c.status,
                jobs_t.c.chunks_total,
                jobs_t.c.chunks_done,
                jobs_t.c.error,
                jobs_t.c.created_at,
                jobs_t.c.updated_at,
                jobs_t.c.completed_at,
            )
            .join(jobs_t, jobs_t.c.id == files_t.c.job_id)
            .where(files_t.c.org_id == org_id, where)
            .order_by(files_t.c.created_at, files_t.c.id)
            .limit(limit)
        ).all()
        return [
            File(
                id=row.f_id,
                source_id=row.f_source_id,
                file_name=row.file_name,
                content_type=row.content_type,
                size_bytes=row.size_bytes,
                created_at=row.f_created_at,
                job=_job(row),
            )
            for row in rows
        ]

    @staticmethod
    def file(conn: Connection, org_id: str, file_id: str, source_id: str = "") -> File:
        """The file; NOT_FOUND when it is not in the organization, or not in `source_id` when given."""
        where = files_t.c.id == file_id
        if source_id:
            where = and_(where, files_t.c.source_id == source_id)
        found = SourceQueries.files(conn, org_id, where, 1)
        if not found:
            raise _not_found("file", file_id)
        return found[0]

    @staticmethod
    def set_job(conn: Connection, job_id: str, **values: Any) -> bool:
        result = conn.execute(
            update(jobs_t).where(jobs_t.c.id == job_id).values(updated_at=utcnow(), **values)
        )
        return bool(result.rowcount)


class Sources:
    """Sources, files and jobs of one organization at a time."""

    def __init__(
        self,
        db: Database,
        passages: PassageStore,
        embedder: Embedder,
        *,
        max_upload_bytes: int,
        jobs: FileJobs,
    ) -> None:
        self._db = db
        self._passages = passages
        self._embedder = embedder
        self._max_upload = max_upload_bytes
        self._jobs = jobs

    async def create(
        self, org_id: str, name: str, *, description: str, embedding_model: str, metadata: dict[str, Any]
    ) -> Source:
        """Creates a source; its embedding model is resolved (and checked) now, by embedding its name."""
        check_text(name, "source.name", max_chars=200, allow_empty=False)
        check_text(description, "source.description", max_chars=10_000)
        probe = await self._embedder.embed([name], embedding_model)
        source_id = new_id("source")

        def tx(conn: Connection) -> Source:
            if SourceQueries.name_taken(conn, org_id, name):
                raise AlreadyExists(
                    f"a source named '{name}' already exists",
                    reason="SOURCE_NAME_TAKEN",
                    metadata={"name": name},
                )
            now = utcnow()
            conn.execute(
                insert(sources_t).values(
                    id=source_id,
                    org_id=org_id,
                    name=name,
                    description=description,
                    embedding_model=probe.model,
                    embedding_dim=probe.dim,
                    metadata_json=metadata,
                    created_at=now,
                    updated_at=now,
                )
            )
            return SourceQueries.source(conn, org_id, source_id)

        return await self._db.write(tx)

    async def get(self, org_id: str, source_id: str) -> Source:
        require_id(source_id, "source_id")
        return await self._db.read(SourceQueries.source, org_id, source_id)

    async def page(self, org_id: str, *, agent_id: str, size: int, token: str) -> tuple[list[Source], str]:
        """Sources, oldest first (optionally those attached to one agent); returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "sources")

        def read(conn: Connection) -> list[Source]:
            query = select(sources_t.c.id).where(sources_t.c.org_id == org_id)
            if agent_id:
                query = query.join(attachments_t, attachments_t.c.source_id == sources_t.c.id).where(
                    attachments_t.c.agent_id == agent_id
                )
            if position is not None:
                created, last = position.time("t"), position.text("i")
                query = query.where(
                    or_(
                        sources_t.c.created_at > created,
                        and_(sources_t.c.created_at == created, sources_t.c.id > last),
                    )
                )
            ids = conn.scalars(query.order_by(sources_t.c.created_at, sources_t.c.id).limit(limit + 1))
            return [SourceQueries.source(conn, org_id, source_id) for source_id in ids]

        sources = await self._db.read(read)
        if len(sources) > limit:
            last = sources[limit - 1]
            return sources[:limit], encode_token("sources", t=last.created_at.isoformat(), i=last.id)
        return sources, ""

    async def update(self, org_id: str, source_id: str, changes: dict[str, Any]) -> Source:
        require_id(source_id, "source_id")
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise invalid("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        if "name" in changes:
            check_text(changes["name"], "source.name", max_chars=200, allow_empty=False)
        if "description" in changes:
            check_text(changes["description"], "source.description", max_chars=10_000)

        def tx(conn: Connection) -> Source:
            SourceQueries.source(conn, org_id, source_id)
            if "name" in changes and SourceQueries.name_taken(
                conn, org_id, changes["name"], other_than=source_id
            ):
                raise AlreadyExists(
                    f"a source named '{changes['name']}' already exists", reason="SOURCE_NAME_TAKEN"
                )
            values = {("metadata_json" if k == "metadata" else k): v for k, v in changes.items()}
            conn.execute(
                update(sources_t).where(sources_t.c.id == source_id).values(updated_at=utcnow(), **values)
            )
            return SourceQueries.source(conn, org_id, source_id)

        return await self._db.write(tx)

    async def delete(self, org_id: str, source_id: str) -> None:
        """Deletes a source with its files, jobs, passages and attachments, all at once."""
        await self.get(org_id, source_id)

        def also(conn: Connection) -> None:
            result = conn.execute(
                delete(sources_t).where(sources_t.c.id == source_id, sources_t.c.org_id == org_id)
            )
            if not result.rowcount:
                raise _not_found("source", source_id)

        await self._passages.purge(org_id, Scope("source", source_id), also=also)

    async def attach(self, org_id: str, source_id: str, agent_id: str) -> Source:
        require_id(source_id, "source_id")
        require_id(agent_id, "agent_id")

        def tx(conn: Connection) -> Source:
            source = SourceQueries.source(conn, org_id, source_id)
            if agent_id not in source.agent_ids:
                conn.execute(
                    insert(attachments_t).values(
                        source_id=source_id, agent_id=agent_id, org_id=org_id, created_at=utcnow()
                    )
                )
            return SourceQueries.source(conn, org_id, source_id)

        return await self._db.write(tx)

    async def detach(self, org_id: str, source_id: str, agent_id: str) -> Source:
        require_id(source_id, "source_id")
        require_id(agent_id, "agent_id")

        def tx(conn: Connection) -> Source:
            source = SourceQueries.source(conn, org_id, source_id)
            if agent_id not in source.agent_ids:
                raise NotFound(
                    f"source {source_id} is not attached to agent {agent_id}", reason="SOURCE_NOT_ATTACHED"
                )
            conn.execute(
                delete(attachments_t).where(
                    attachments_t.c.source_id == source_id, attachments_t.c.agent_id == agent_id
                )
            )
            return SourceQueries.source(conn, org_id, source_id)

        return await self._db.write(tx)

    async def upload(
        self, org_id: str, source_id: str, file_name: str, content_type: str, content: bytes
    ) -> File:
        """Stores a file and queues its processing; bad input is refused before anything is stored."""
        require_id(source_id, "source_id")
        kind = content_type_of(file_name, content_type)
        if not content:
            raise invalid("content", "the file is empty")
        if len(content) > self._max_upload:
            raise invalid("content", f"is {len(content)} bytes; the upload limit is {self._max_upload} bytes")
        check_text_content(content, kind)
        file_id, job_id = new_id("file"), new_id("job")

        def tx(conn: Connection) -> File:
            SourceQueries.source(conn, org_id, source_id)
            now = utcnow()
            conn.execute(
                insert(files_t).values(
                    id=file_id,
                    org_id=org_id,
                    source_id=source_id,
                    file_name=file_name,
                    content_type=kind,
                    size_bytes=len(content),
                    job_id=job_id,
                    created_at=now,
                )
            )
            conn.execute(insert(contents_t).values(file_id=file_id, content=content))
            conn.execute(
                insert(jobs_t).values(
                    id=job_id,
                    org_id=org_id,
                    source_id=source_id,
                    file_id=file_id,
                    status=PENDING,
                    chunks_total=0,
                    chunks_done=0,
                    error="",
                    created_at=now,
                    updated_at=now,
                )
            )
            return SourceQueries.file(conn, org_id, file_id)

        stored = await self._db.write(tx)
        self._jobs.enqueue(org_id, job_id)
        return stored

    async def get_file(self, org_id: str, file_id: str, *, source_id: str = "") -> File:
        """One file (of the source `source_id`, when given)."""
        require_id(file_id, "file_id")
        return await self._db.read(SourceQueries.file, org_id, file_id, source_id)

    async def list_files(
        self, org_id: str, source_id: str, *, size: int, token: str
    ) -> tuple[list[File], str]:
        require_id(source_id, "source_id")
        limit = page_size(size)
        position = decode_token(token, "files")

        def read(conn: Connection) -> list[File]:
            SourceQueries.source(conn, org_id, source_id)
            where = files_t.c.source_id == source_id
            if position is not None:
                created, last = position.time("t"), position.text("i")
                where = and_(
                    where,
                    or_(
                        files_t.c.created_at > created,
                        and_(files_t.c.created_at == created, files_t.c.id > last),
                    ),
                )
            return SourceQueries.files(conn, org_id, where, limit + 1)

        files = await self._db.read(read)
        if len(files) > limit:
            last = files[limit - 1]
            return files[:limit], encode_token("files", t=last.created_at.isoformat(), i=last.id)
        return files, ""

    async def delete_file(self, org_id: str, file_id: str, *, source_id: str = "") -> None:
        """Deletes a file, its job and its passages at once (a running job stops at its next batch).

        With `source_id`, only a file of that source: the file row is deleted in the transaction that deletes
        its passages, and when it is not there (another source's, or gone) nothing is deleted.
        """
        require_id(file_id, "file_id")
        if not source_id:
            source_id = (await self.get_file(org_id, file_id)).source_id

        def also(conn: Connection) -> None:
            deleted = conn.execute(
                delete(files_t).where(
                    files_t.c.id == file_id, files_t.c.org_id == org_id, files_t.c.source_id == source_id
                )
            )
            if not deleted.rowcount:
                raise _not_found("file", file_id)

        await self._passages.purge(org_id, Scope("source", source_id), file_id=file_id, also=also)

    async def get_job(self, org_id: str, job_id: str) -> Job:
        require_id(job_id, "job_id")
        return await self._db.read(SourceQueries.job, org_id, job_id)


class _ParsedElsewhere(Exception):
    """Another worker parsed the file first (a job resumed by two replicas)."""


class FileJobs:
    """Processes uploaded files one at a time in the background."""

    def __init__(self, db: Database, passages: PassageStore, embedder: Embedder, parser: FileParser) -> None:
        self._db = db
        self._passages = passages
        self._embedder = embedder
        self._parser = parser
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._retry_delay = 1.0

    def enqueue(self, org_id: str, job_id: str) -> None:
        self._queue.put_nowait((org_id, job_id))

    async def start(self) -> None:
        """Resumes the jobs a previous run left pending or running, then serves new ones.

        With several replicas on Postgres, a starting replica also picks up jobs another one is running;
        both then finish it without duplicates (one parses it, both fill in the same pending chunks).
        """

        def unfinished(conn: Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                select(jobs_t.c.org_id, jobs_t.c.id)
                .where(jobs_t.c.status.in_([PENDING, RUNNING]))
                .order_by(jobs_t.c.created_at)
            )
            return [(row.org_id, row.id) for row in rows]

        for org_id, job_id in await self._db.read(unfinished):
            log.info("resuming file job %s", job_id)
            self.enqueue(org_id, job_id)
        self._task = asyncio.ensure_future(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _serve(self) -> None:
        while True:
            org_id, job_id = await self._queue.get()
            try:
                with acting_as(Actor(org_id, JOB_USER)):
                    await self._process(org_id, job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("file job %s failed", job_id)
                await self._fail(job_id, f"internal error while processing the file ({type(exc).__name__})")
            finally:
                self._queue.task_done()

    async def _fail(self, job_id: str, error: str) -> None:
        def tx(conn: Connection) -> None:
            SourceQueries.set_job(conn, job_id, status=FAILED, error=error, completed_at=utcnow())

        await self._db.write(tx)

    async def _process(self, org_id: str, job_id: str) -> None:
        def begin(conn: Connection) -> tuple[Job, str, str, bytes | None] | None:
            try:
                job = SourceQueries.job(conn, org_id, job_id)
            except NotFound:
                return None  # its file was deleted
            if job.status in (COMPLETED, FAILED):
                return None
            file = SourceQueries.file(conn, org_id, job.file_id)
            content = conn.scalar(select(contents_t.c.content).where(contents_t.c.file_id == job.file_id))
            model = conn.scalar(select(sources_t.c.embedding_model).where(sources_t.c.id == job.source_id))
            SourceQueries.set_job(conn, job_id, status=RUNNING)
            return job, file.content_type, str(model or ""), content

        started = await self._db.write(begin)
        if started is None:
            return
        job, content_type, model, content = started
        if content is not None:
            try:
                text = await self._parser.text(content, content_type)
            except FileUnreadable as exc:
                await self._fail(job_id, str(exc))
                return
            chunks = chunk_text(text)
            if not chunks:
                await self._fail(job_id, "the file contains no text (a scanned PDF needs OCR first)")
                return
            now = utcnow()
            pending = [
                NewPassage(
                    id=new_id("passage"),
                    text=chunk,
                    created_at=now,
                    source_id=job.source_id,
                    file_id=job.file_id,
                    chunk_index=i,
                )
                for i, chunk in enumerate(chunks)
            ]

            def parsed(conn: Connection) -> None:
                taken = conn.execute(delete(contents_t).where(contents_t.c.file_id == job.file_id))
                if taken.rowcount == 0:
                    raise _ParsedElsewhere  # rolls these chunks back: another worker stored its own
                SourceQueries.set_job(conn, job_id, chunks_total=len(chunks), chunks_done=0)

            with contextlib.suppress(_ParsedElsewhere):  # then its chunks are stored: help embed them
                await self._passages.insert(org_id, pending, also=parsed)
        elif job.chunks_total == 0:
            await self._fail(job_id, "the file's content was lost before it was parsed; upload it again")
            return
        await self._embed_all(org_id, job, model)

    async def _embed_all(self, org_id: str, job: Job, model: str) -> None:
        scope = Scope("source", job.source_id)
        failures = 0
        while True:
            batch = await self._passages.pending(org_id, job.file_id, EMBED_BATCH)
            if not batch:
                break
            try:
                embedded = await self._embedder.embed([text for _, text in batch], model)
            except Unavailable as exc:
                failures += 1
                if failures > MAX_EMBED_RETRIES:
                    await self._fail(job.id, f"embedding failed: {exc.message}")
                    return
                await asyncio.sleep(self._retry_delay * 2**failures)
                continue
            except MnemoError as exc:
                await self._fail(job.id, f"embedding failed: {exc.message}")
                return
            failures = 0

            def progress(conn: Connection) -> None:
                # Counted, not added up, so two workers finishing one job never count a chunk twice.
                done = (
                    select(func.count())
                    .where(passages_t.c.file_id == job.file_id, passages_t.c.embedding_dim > 0)
                    .scalar_subquery()
                )
                conn.execute(
                    update(jobs_t).where(jobs_t.c.id == job.id).values(chunks_done=done, updated_at=utcnow())
                )

            await self._passages.set_vectors(
                org_id, scope, [pk for pk, _ in batch], embedded.vectors, embedded.model, also=progress
            )

        def finish(conn: Connection) -> None:
            SourceQueries.set_job(conn, job.id, status=COMPLETED, completed_at=utcnow())

        await self._db.write(finish)
