"""SourceService: proto <-> sources, their files and the jobs that process them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.memory.v1 import source_pb2, source_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import masked_changes
from mnemo_core.wire import from_struct, to_struct, to_timestamp
from mnemo_memory.sources import File, Job, Source, Sources

Context = Any  # grpc.aio.ServicerContext; unused by these thin handlers

_JOB_STATUSES = EnumNames(source_pb2.JobStatus)


def source_to_proto(source: Source) -> source_pb2.Source:
    """The wire form of a source."""
    return source_pb2.Source(
        id=source.id,
        name=source.name,
        description=source.description,
        embedding_model=source.embedding_model,
        embedding_dim=source.embedding_dim,
        metadata=to_struct(source.metadata),
        agent_ids=source.agent_ids,
        create_time=to_timestamp(source.created_at),
        update_time=to_timestamp(source.updated_at),
    )


def job_to_proto(job: Job) -> source_pb2.Job:
    """The wire form of a job."""
    return source_pb2.Job(
        id=job.id,
        file_id=job.file_id,
        source_id=job.source_id,
        status=_JOB_STATUSES.value(job.status),
        chunks_total=job.chunks_total,
        chunks_done=job.chunks_done,
        progress=job.progress,
        error=job.error,
        create_time=to_timestamp(job.created_at),
        update_time=to_timestamp(job.updated_at),
        complete_time=to_timestamp(job.completed_at),
    )


def file_to_proto(file: File) -> source_pb2.File:
    """The wire form of a file."""
    return source_pb2.File(
        id=file.id,
        source_id=file.source_id,
        file_name=file.file_name,
        content_type=file.content_type,
        size_bytes=file.size_bytes,
        status=_JOB_STATUSES.value(file.job.status),
        error=file.job.error,
        chunk_count=file.job.chunks_total,
        job_id=file.job.id,
        create_time=to_timestamp(file.created_at),
        update_time=to_timestamp(file.job.updated_at),
    )


_SOURCE_FIELDS: dict[str, Callable[[source_pb2.Source], Any]] = {
    "name": lambda s: s.name,
    "description": lambda s: s.description,
    "metadata": lambda s: from_struct(s.metadata),
}


class SourceServicer(source_pb2_grpc.SourceServiceServicer):
    """SourceService over Sources."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    async def CreateSource(
        self, request: source_pb2.CreateSourceRequest, context: Context
    ) -> source_pb2.CreateSourceResponse:
        source = await self._sources.create(
            current_actor().org_id,
            request.source.name,
            description=request.source.description,
            embedding_model=request.source.embedding_model,
            metadata=from_struct(request.source.metadata),
        )
        return source_pb2.CreateSourceResponse(source=source_to_proto(source))

    async def GetSource(
        self, request: source_pb2.GetSourceRequest, context: Context
    ) -> source_pb2.GetSourceResponse:
        source = await self._sources.get(current_actor().org_id, request.source_id)
        return source_pb2.GetSourceResponse(source=source_to_proto(source))

    async def ListSources(
        self, request: source_pb2.ListSourcesRequest, context: Context
    ) -> source_pb2.ListSourcesResponse:
        sources, token = await self._sources.page(
            current_actor().org_id,
            agent_id=request.agent_id,
            size=request.page_size,
            token=request.page_token,
        )
        return source_pb2.ListSourcesResponse(
            sources=[source_to_proto(s) for s in sources], next_page_token=token
        )

    async def UpdateSource(
        self, request: source_pb2.UpdateSourceRequest, context: Context
    ) -> source_pb2.UpdateSourceResponse:
        changes = masked_changes(request.update_mask.paths, request.source, _SOURCE_FIELDS)
        source = await self._sources.update(current_actor().org_id, request.source.id, changes)
        return source_pb2.UpdateSourceResponse(source=source_to_proto(source))

    async def DeleteSource(
        self, request: source_pb2.DeleteSourceRequest, context: Context
    ) -> source_pb2.DeleteSourceResponse:
        await self._sources.delete(current_actor().org_id, request.source_id)
        return source_pb2.DeleteSourceResponse()

    async def AttachSource(
        self, request: source_pb2.AttachSourceRequest, context: Context
    ) -> source_pb2.AttachSourceResponse:
        source = await self._sources.attach(current_actor().org_id, request.source_id, request.agent_id)
        return source_pb2.AttachSourceResponse(source=source_to_proto(source))

    async def DetachSource(
        self, request: source_pb2.DetachSourceRequest, context: Context
    ) -> source_pb2.DetachSourceResponse:
        source = await self._sources.detach(current_actor().org_id, request.source_id, request.agent_id)
        return source_pb2.DetachSourceResponse(source=source_to_proto(source))

    async def UploadFile(
        self, request: source_pb2.UploadFileRequest, context: Context
    ) -> source_pb2.UploadFileResponse:
        file = await self._sources.upload(
            current_actor().org_id,
            request.source_id,
            request.file_name,
            request.content_type,
            request.content,
        )
        return source_pb2.UploadFileResponse(file=file_to_proto(file), job=job_to_proto(file.job))

    async def GetFile(
        self, request: source_pb2.GetFileRequest, context: Context
    ) -> source_pb2.GetFileResponse:
        file = await self._sources.get_file(
            current_actor().org_id, request.file_id, source_id=request.source_id
        )
        return source_pb2.GetFileResponse(file=file_to_proto(file))

    async def ListFiles(
        self, request: source_pb2.ListFilesRequest, context: Context
    ) -> source_pb2.ListFilesResponse:
        files, token = await self._sources.list_files(
            current_actor().org_id, request.source_id, size=request.page_size, token=request.page_token
        )
        return source_pb2.ListFilesResponse(files=[file_to_proto(f) for f in files], next_page_token=token)

    async def DeleteFile(
        self, request: source_pb2.DeleteFileRequest, context: Context
    ) -> source_pb2.DeleteFileResponse:
        await self._sources.delete_file(current_actor().org_id, request.file_id, source_id=request.source_id)
        return source_pb2.DeleteFileResponse()

    async def GetJob(self, request: source_pb2.GetJobRequest, context: Context) -> source_pb2.GetJobResponse:
        job = await self._sources.get_job(current_actor().org_id, request.job_id)
        return source_pb2.GetJobResponse(job=job_to_proto(job))
