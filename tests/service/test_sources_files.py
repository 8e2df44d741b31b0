"""SourceService over real gRPC: files parsed, chunked and embedded in the background, searchable by agents."""

# The fixtures come from memory_with_embeddings and are named as arguments (pytest's way).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import insert

from mnemo.memory.v1 import passage_pb2, passage_pb2_grpc, source_pb2, source_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import AlreadyExists, InvalidArgument, NotFound
from mnemo_core.wire import utcnow
from mnemo_memory.sources import sources_t
from tests.fakes.llm_provider import free_port
from tests.service.conftest import Served, new_actor, new_agent_id
from tests.service.memory_with_embeddings import (  # noqa: F401 - fixtures
    archival_memory,
    fake_weaviate,
    memory_app,
    memory_database,
    memory_postgres,
    memory_with_llm,
    passage_backend,
    passages,
    sources,
)

if TYPE_CHECKING:
    from mnemo.memory.v1.passage_pb2_grpc import PassageServiceAsyncStub as Passages
    from mnemo.memory.v1.source_pb2_grpc import SourceServiceAsyncStub as Sources

MANUAL = (
    "# Espresso machine manual\n\n"
    "Descale the boiler every three months with citric acid.\n\n"
    "The steam wand must be purged after frothing milk, or it clogs.\n"
)


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF whose page shows `text` (Helvetica), with a correct cross-reference table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


async def new_source(sources: Sources, name: str = "manuals") -> source_pb2.Source:
    response = await sources.CreateSource(source_pb2.CreateSourceRequest(source=source_pb2.Source(name=name)))
    return response.source


async def upload(
    sources: Sources, source_id: str, name: str, content: bytes, content_type: str = ""
) -> source_pb2.UploadFileResponse:
    return await sources.UploadFile(
        source_pb2.UploadFileRequest(
            source_id=source_id, file_name=name, content_type=content_type, content=content
        )
    )


async def finished(sources: Sources, job_id: str, timeout: float = 30.0) -> source_pb2.Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await sources.GetJob(source_pb2.GetJobRequest(job_id=job_id))).job
        if job.status in (source_pb2.JOB_STATUS_COMPLETED, source_pb2.JOB_STATUS_FAILED):
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job still {job.status}"
        await asyncio.sleep(0.05)


async def search(passages: Passages, agent_id: str, query: str) -> list[passage_pb2.PassageMatch]:
    response = await passages.SearchPassages(
        passage_pb2.SearchPassagesRequest(agent_id=agent_id, query=query)
    )
    return list(response.matches)


async def test_source_records_its_resolved_embedding_model(sources: Sources) -> None:
    with acting_as(new_actor()):
        source = await new_source(sources)
        fetched = (await sources.GetSource(source_pb2.GetSourceRequest(source_id=source.id))).source
        with pytest.raises(AlreadyExists):
            await new_source(sources)
    assert source.embedding_model == "local/all-minilm-l6-v2"
    assert source.embedding_dim == 384
    assert fetched == source


@pytest.mark.parametrize(
    ("name", "content", "content_type", "expected"),
    [
        ("manual.md", MANUAL.encode(), "", "text/markdown"),
        ("manual.txt", MANUAL.encode(), "text/plain", "text/plain"),
        (
            "manual.html",
            f"<html><head><style>p{{color:red}}</style><script>var x=1;</script></head>"
            f"<body><h1>Espresso</h1><p>{MANUAL}</p></body></html>".encode(),
            "text/html",
            "text/html",
        ),
        (
            "manual.pdf",
            minimal_pdf("Descale the boiler every three months with citric acid."),
            "",
            "application/pdf",
        ),
    ],
)
async def test_uploaded_file_is_processed_and_searchable_by_attached_agents(
    sources: Sources, passages: Passages, name: str, content: bytes, content_type: str, expected: str
) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        source = await new_source(sources)
        uploaded = await upload(sources, source.id, name, content, content_type)
        assert uploaded.file.content_type == expected
        assert uploaded.job.status in (source_pb2.JOB_STATUS_PENDING, source_pb2.JOB_STATUS_RUNNING)
        job = await finished(sources, uploaded.job.id)
        assert job.status == source_pb2.JOB_STATUS_COMPLETED, job.error
        assert job.chunks_done == job.chunks_total > 0
        assert job.progress == 1.0
        not_attached = await search(passages, agent_id, "how often should I descale?")
        await sources.AttachSource(source_pb2.AttachSourceRequest(source_id=source.id, agent_id=agent_id))
        attached = await search(passages, agent_id, "how often should I descale?")
        file = (await sources.GetFile(source_pb2.GetFileRequest(file_id=uploaded.file.id))).file
    assert not_attached == []
    assert "citric acid" in attached[0].passage.text
    assert attached[0].passage.source_id == source.id
    assert attached[0].passage.file_id == uploaded.file.id
    assert "color:red" not in attached[0].passage.text
    assert "var x" not in attached[0].passage.text
    assert file.status == source_pb2.JOB_STATUS_COMPLETED
    assert file.chunk_count == job.chunks_total


async def test_detached_source_is_no_longer_searched(sources: Sources, passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        source = await new_source(sources)
        await finished(sources, (await upload(sources, source.id, "m.md", MANUAL.encode())).job.id)
        attached = await sources.AttachSource(
            source_pb2.AttachSourceRequest(source_id=source.id, agent_id=agent_id)
        )
        listed = await sources.ListSources(source_pb2.ListSourcesRequest(agent_id=agent_id))
        await sources.DetachSource(source_pb2.DetachSourceRequest(source_id=source.id, agent_id=agent_id))
        after = await search(passages, agent_id, "steam wand")
        with pytest.raises(NotFound):
            await sources.DetachSource(source_pb2.DetachSourceRequest(source_id=source.id, agent_id=agent_id))
    assert list(attached.source.agent_ids) == [agent_id]
    assert [s.id for s in listed.sources] == [source.id]
    assert after == []


async def test_deleting_a_file_deletes_its_passages(sources: Sources, passages: Passages) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        source = await new_source(sources)
        kept = await upload(sources, source.id, "kept.txt", b"The garden gate squeaks when it rains.")
        gone = await upload(sources, source.id, "gone.txt", MANUAL.encode())
        for uploaded in (kept, gone):
            await finished(sources, uploaded.job.id)
        await sources.AttachSource(source_pb2.AttachSourceRequest(source_id=source.id, agent_id=agent_id))
        await sources.DeleteFile(source_pb2.DeleteFileRequest(file_id=gone.file.id))
        left = await passages.ListPassages(
            passage_pb2.ListPassagesRequest(source_id=source.id, page_size=100)
        )
        hits = await search(passages, agent_id, "descale the boiler")
        files = await sources.ListFiles(source_pb2.ListFilesRequest(source_id=source.id))
        with pytest.raises(NotFound):
            await sources.GetJob(source_pb2.GetJobRequest(job_id=gone.job.id))
    assert {p.file_id for p in left.passages} == {kept.file.id}
    assert all(hit.passage.file_id == kept.file.id for hit in hits)
    assert [f.id for f in files.files] == [kept.file.id]


async def test_a_file_named_with_another_source_as_parent_is_not_found_and_kept_with_its_passages(
    sources: Sources, passages: Passages
) -> None:
    with acting_as(new_actor()):
        source, other = await new_source(sources, "handbooks"), await new_source(sources, "elsewhere")
        uploaded = await upload(sources, source.id, "manual.txt", MANUAL.encode())
        await finished(sources, uploaded.job.id)
        file_id = uploaded.file.id
        for call in (
            sources.GetFile(source_pb2.GetFileRequest(file_id=file_id, source_id=other.id)),
            sources.DeleteFile(source_pb2.DeleteFileRequest(file_id=file_id, source_id=other.id)),
        ):
            with pytest.raises(NotFound) as missing:
                await call
            assert missing.value.reason == "FILE_NOT_FOUND"
        kept = await sources.GetFile(source_pb2.GetFileRequest(file_id=file_id, source_id=source.id))
        left = await passages.ListPassages(
            passage_pb2.ListPassagesRequest(source_id=source.id, page_size=100)
        )
        await sources.DeleteFile(source_pb2.DeleteFileRequest(file_id=file_id, source_id=source.id))
        after = await passages.ListPassages(
            passage_pb2.ListPassagesRequest(source_id=source.id, page_size=100)
        )
        with pytest.raises(NotFound):
            await sources.GetFile(source_pb2.GetFileRequest(file_id=file_id))
    assert kept.file.id == file_id
    assert left.passages
    assert {p.file_id for p in left.passages} == {file_id}
    assert list(after.passages) == []


async def test_deleting_a_source_deletes_files_passages_and_attachments(
    sources: Sources, passages: Passages
) -> None:
    actor, agent_id = new_actor(), new_agent_id()
    with acting_as(actor):
        source = await new_source(sources)
        uploaded = await upload(sources, source.id, "m.md", MANUAL.encode())
        await finished(sources, uploaded.job.id)
        await sources.AttachSource(source_pb2.AttachSourceRequest(source_id=source.id, agent_id=agent_id))
        await sources.DeleteSource(source_pb2.DeleteSourceRequest(source_id=source.id))
        with pytest.raises(NotFound):
            await sources.GetSource(source_pb2.GetSourceRequest(source_id=source.id))
        with pytest.raises(NotFound):
            await sources.GetFile(source_pb2.GetFileRequest(file_id=uploaded.file.id))
        left = await passages.ListPassages(passage_pb2.ListPassagesRequest(source_id=source.id))
        hits = await search(passages, agent_id, "descale")
        attached = await sources.ListSources(source_pb2.ListSourcesRequest(agent_id=agent_id))
    assert list(left.passages) == []
    assert hits == []
    assert list(attached.sources) == []


@pytest.mark.parametrize(
    ("name", "content", "content_type", "reason"),
    [
        ("bad.txt", b"caf\xe9 au lait", "", "INVALID_UTF8"),
        ("empty.txt", b"", "", "INVALID_ARGUMENT"),
        ("image.png", b"\x89PNG\r\n", "image/png", "UNSUPPORTED_FILE_TYPE"),
        ("fake.pdf", b"not a pdf at all", "", "INVALID_ARGUMENT"),
        ("", b"text", "text/plain", "INVALID_ARGUMENT"),
        ("nul.txt", b"a\x00b", "", "INVALID_ARGUMENT"),
    ],
)
async def test_bad_upload_is_refused_and_nothing_is_stored(
    sources: Sources, name: str, content: bytes, content_type: str, reason: str
) -> None:
    with acting_as(new_actor()):
        source = await new_source(sources)
        with pytest.raises(InvalidArgument) as refused:
            await upload(sources, source.id, name, content, content_type)
        files = await sources.ListFiles(source_pb2.ListFilesRequest(source_id=source.id))
    assert refused.value.reason == reason
    assert list(files.files) == []


async def test_a_pdf_without_text_fails_its_job_with_a_clear_error(sources: Sources) -> None:
    with acting_as(new_actor()):
        source = await new_source(sources)
        uploaded = await upload(sources, source.id, "blank.pdf", minimal_pdf(""))
        job = await finished(sources, uploaded.job.id)
    assert job.status == source_pb2.JOB_STATUS_FAILED
    assert "no text" in job.error


async def store_source(served: Served, actor: Actor, source_id: str, name: str) -> None:
    """Stores a source directly: creating one through the API resolves its model through the gateway."""
    now = utcnow()
    await memory_app(served).db.write(
        lambda conn: conn.execute(
            insert(sources_t).values(
                id=source_id,
                org_id=actor.org_id,
                name=name,
                description="",
                embedding_model="local/all-minilm-l6-v2",
                embedding_dim=384,
                metadata_json={},
                created_at=now,
                updated_at=now,
            )
        )
    )


def blank_pdf(pages: int) -> bytes:
    """A PDF of `pages` empty pages."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(612, 792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def parse_in(served: Served, name: str, content: bytes) -> source_pb2.Job:
    stub = served.stub(source_pb2_grpc.SourceServiceStub)
    actor = new_actor()
    source_id = f"source-{name.replace('.', '-')}-{uuid.uuid4().hex[:8]}"
    await store_source(served, actor, source_id, name)
    with acting_as(actor):
        uploaded = await upload(stub, source_id, name, content)
        return await finished(stub, uploaded.job.id, timeout=120)


async def test_hostile_files_fail_their_jobs_at_the_parsing_limits_and_the_service_goes_on(
    tmp_path: Path, llm_service: Served, memory_database: str
) -> None:
    # 16 MB of HTML: over a second of CPU, and more than 64 MiB of memory to parse.
    heavy = ("<html><body>" + "<div><p>word word</p></div>" * 600_000 + "</body></html>").encode()
    limits = {"file_parse_seconds": 1, "file_parse_max_pages": 2}
    async with memory_with_llm(tmp_path / "cpu", llm_service.address, memory_database, **limits) as served:
        slow = await parse_in(served, "slow.html", heavy)
        long = await parse_in(served, "long.pdf", blank_pdf(3))
    async with memory_with_llm(
        tmp_path / "memory", llm_service.address, memory_database, file_parse_memory_mb=64
    ) as served:
        greedy = await parse_in(served, "greedy.html", heavy)
        fine = await parse_in(served, "fine.md", MANUAL.encode())

    assert slow.status == long.status == greedy.status == source_pb2.JOB_STATUS_FAILED
    assert slow.error.startswith("the file could not be parsed within 1 s")
    assert long.error == "the PDF has 3 pages; at most 2 are read, split it"
    assert greedy.error == "parsing the file needed more than 64 MiB of memory; split it"
    assert fine.status == source_pb2.JOB_STATUS_COMPLETED


async def test_sources_files_and_jobs_of_another_org_are_not_found(sources: Sources) -> None:
    with acting_as(new_actor()):
        source = await new_source(sources)
        uploaded = await upload(sources, source.id, "m.md", MANUAL.encode())
        await finished(sources, uploaded.job.id)
    with acting_as(new_actor()):
        for call in (
            sources.GetSource(source_pb2.GetSourceRequest(source_id=source.id)),
            sources.GetFile(source_pb2.GetFileRequest(file_id=uploaded.file.id)),
            sources.GetJob(source_pb2.GetJobRequest(job_id=uploaded.job.id)),
            sources.DeleteSource(source_pb2.DeleteSourceRequest(source_id=source.id)),
            sources.AttachSource(
                source_pb2.AttachSourceRequest(source_id=source.id, agent_id=new_agent_id())
            ),
            upload(sources, source.id, "x.txt", b"x"),
        ):
            with pytest.raises(NotFound):
                await call


async def test_source_update_changes_only_the_masked_fields(sources: Sources) -> None:
    with acting_as(new_actor()):
        source = await new_source(sources, "docs")
        updated = await sources.UpdateSource(
            source_pb2.UpdateSourceRequest(
                source=source_pb2.Source(id=source.id, name="handbooks", description="ignored"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            )
        )
    assert updated.source.name == "handbooks"
    assert updated.source.description == ""


async def test_a_job_cut_off_by_a_restart_is_resumed_and_completes(
    tmp_path: Path, llm_service: Served, memory_database: str
) -> None:
    actor: Actor = new_actor()
    source_id = f"source-restart-{actor.org_id[4:12]}"  # the Postgres database outlives one test
    # First run: the llm-gateway is unreachable, so the job parses the file and then waits to embed.
    async with memory_with_llm(tmp_path, f"127.0.0.1:{free_port()}", memory_database) as first:
        stub = first.stub(source_pb2_grpc.SourceServiceStub)
        await store_source(first, actor, source_id, "restart")
        with acting_as(actor):
            uploaded = await upload(stub, source_id, "m.md", MANUAL.encode())
            for _ in range(250):
                job = (await stub.GetJob(source_pb2.GetJobRequest(job_id=uploaded.job.id))).job
                if job.chunks_total:
                    break
                await asyncio.sleep(0.02)
    assert job.status == source_pb2.JOB_STATUS_RUNNING
    assert job.chunks_total > 0
    assert job.chunks_done == 0
    # Second run on the same database, with the gateway up: the job resumes from its stored chunks.
    async with memory_with_llm(tmp_path, llm_service.address, memory_database) as second:
        stub = second.stub(source_pb2_grpc.SourceServiceStub)
        passages_stub = second.stub(passage_pb2_grpc.PassageServiceStub)
        with acting_as(actor):
            job = await finished(stub, uploaded.job.id)
            agent_id = new_agent_id()
            await stub.AttachSource(source_pb2.AttachSourceRequest(source_id=source_id, agent_id=agent_id))
            hits = await search(passages_stub, agent_id, "steam wand clogs")
    assert job.status == source_pb2.JOB_STATUS_COMPLETED
    assert job.chunks_done == job.chunks_total
    assert "steam wand" in hits[0].passage.text
