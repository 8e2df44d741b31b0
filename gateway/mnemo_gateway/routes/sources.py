"""/v1/sources, /v1/jobs and /v1/agents/{id}/sources: documents agents can search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, UploadFile, status

from mnemo.memory.v1 import passage_pb2, source_pb2
from mnemo.rest.archival import Passage
from mnemo.rest.sources import File, Job, Source, SourceCreate, SourceUpdate, Upload
from mnemo_core.errors import InvalidArgument
from mnemo_core.wire import to_struct
from mnemo_gateway import memory_convert as mc
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(tags=["sources"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]
# Uploads travel to the memory service in one gRPC message (64 MB at most); it applies its own limit.
MAX_UPLOAD_BYTES = 60 * 1024 * 1024


@router.post("/v1/sources", status_code=status.HTTP_201_CREATED, response_model=Source)
async def create_source(body: SourceCreate, mesh: Mesh) -> Source:
    """Creates a source; its embedding model is fixed now (the server default when empty)."""
    response = await mesh.sources.CreateSource(
        source_pb2.CreateSourceRequest(
            source=source_pb2.Source(
                name=body.name,
                description=body.description,
                embedding_model=body.embedding_model,
                metadata=to_struct(body.metadata),
            )
        )
    )
    return mc.source_out(response.source)


@router.get("/v1/sources", response_model=list[Source])
async def list_sources(
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[Source]:
    """Lists sources, oldest first; `X-Next-Page-Token` continues the listing."""
    page = await mesh.sources.ListSources(
        source_pb2.ListSourcesRequest(page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [mc.source_out(s) for s in page.sources]


@router.get("/v1/sources/{source_id}", response_model=Source)
async def get_source(source_id: str, mesh: Mesh) -> Source:
    """Returns one source."""
    response = await mesh.sources.GetSource(source_pb2.GetSourceRequest(source_id=source_id))
    return mc.source_out(response.source)


@router.patch("/v1/sources/{source_id}", response_model=Source)
async def update_source(source_id: str, body: SourceUpdate, mesh: Mesh) -> Source:
    """Changes the fields given."""
    request = source_pb2.UpdateSourceRequest(
        source=source_pb2.Source(
            id=source_id,
            name=body.name or "",
            description=body.description or "",
            metadata=to_struct(body.metadata),
        )
    )
    request.update_mask.paths.extend(sorted(body.model_dump(exclude_unset=True)))
    response = await mesh.sources.UpdateSource(request)
    return mc.source_out(response.source)


@router.delete("/v1/sources/{source_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_source(source_id: str, mesh: Mesh) -> Response:
    """Deletes a source with its files and their passages."""
    await mesh.sources.DeleteSource(source_pb2.DeleteSourceRequest(source_id=source_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/sources/{source_id}/upload", status_code=status.HTTP_202_ACCEPTED, response_model=Upload)
async def upload_file(source_id: str, file: UploadFile, mesh: Mesh) -> Upload:
    """Uploads a file (txt, md, html, pdf; multipart field `file`); it is processed in the background."""
    content = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(content) > MAX_UPLOAD_BYTES:
        raise InvalidArgument(
            f"the file is larger than {MAX_UPLOAD_BYTES} bytes", reason="FILE_TOO_LARGE"
        ).with_violation("file", "too large")
    response = await mesh.sources.UploadFile(
        source_pb2.UploadFileRequest(
            source_id=source_id,
            file_name=file.filename or "",
            content_type=file.content_type or "",
            content=content,
        )
    )
    return Upload(file=mc.file_out(response.file), job=mc.job_out(response.job))


@router.get("/v1/sources/{source_id}/files", response_model=list[File])
async def list_files(
    source_id: str,
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[File]:
    """Lists a source's files with their processing state."""
    page = await mesh.sources.ListFiles(
        source_pb2.ListFilesRequest(source_id=source_id, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [mc.file_out(f) for f in page.files]


@router.get("/v1/sources/{source_id}/files/{file_id}", response_model=File)
async def get_file(source_id: str, file_id: str, mesh: Mesh) -> File:
    """Returns one file of the source."""
    response = await mesh.sources.GetFile(source_pb2.GetFileRequest(file_id=file_id, source_id=source_id))
    return mc.file_out(response.file)


@router.delete("/v1/sources/{source_id}/files/{file_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_file(source_id: str, file_id: str, mesh: Mesh) -> Response:
    """Deletes a file and its passages."""
    await mesh.sources.DeleteFile(source_pb2.DeleteFileRequest(file_id=file_id, source_id=source_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/sources/{source_id}/passages", response_model=list[Passage])
async def list_source_passages(
    source_id: str,
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[Passage]:
    """Lists the passages cut from a source's files."""
    await mesh.sources.GetSource(source_pb2.GetSourceRequest(source_id=source_id))
    page = await mesh.passages.ListPassages(
        passage_pb2.ListPassagesRequest(source_id=source_id, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [mc.passage_out(p) for p in page.passages]


@router.get("/v1/jobs/{job_id}", response_model=Job)
async def get_job(job_id: str, mesh: Mesh) -> Job:
    """Returns a file-processing job: status, progress and error."""
    response = await mesh.sources.GetJob(source_pb2.GetJobRequest(job_id=job_id))
    return mc.job_out(response.job)


@router.get("/v1/agents/{agent_id}/sources", response_model=list[Source])
async def list_agent_sources(agent_id: str, mesh: Mesh) -> list[Source]:
    """Lists the sources attached to an agent."""
    await mesh.agent(agent_id)
    page = await mesh.sources.ListSources(source_pb2.ListSourcesRequest(agent_id=agent_id, page_size=1000))
    return [mc.source_out(s) for s in page.sources]


@router.patch("/v1/agents/{agent_id}/sources/attach/{source_id}", response_model=Source)
async def attach_source(agent_id: str, source_id: str, mesh: Mesh) -> Source:
    """Attaches a source to an agent: its passages become searchable by the agent."""
    await mesh.agent(agent_id)
    response = await mesh.sources.AttachSource(
        source_pb2.AttachSourceRequest(source_id=source_id, agent_id=agent_id)
    )
    return mc.source_out(response.source)


@router.patch("/v1/agents/{agent_id}/sources/detach/{source_id}", response_model=Source)
async def detach_source(agent_id: str, source_id: str, mesh: Mesh) -> Source:
    """Detaches a source from an agent."""
    await mesh.agent(agent_id)
    response = await mesh.sources.DetachSource(
        source_pb2.DetachSourceRequest(source_id=source_id, agent_id=agent_id)
    )
    return mc.source_out(response.source)
