"""Proto <-> REST shapes of memory resources."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from mnemo.memory.v1 import block_pb2, message_pb2, passage_pb2, search_pb2, source_pb2
from mnemo.rest.archival import Passage
from mnemo.rest.blocks import BlockCreateRequest, BlockUpdate, BlockVersion, Template
from mnemo.rest.common import Score
from mnemo.rest.messages import MessageHit, MessageSearchResult
from mnemo.rest.sources import File, Job, Source
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import field_time, from_struct, to_struct
from mnemo_gateway import convert

JOB_STATUSES = EnumNames(source_pb2.JobStatus)
SEARCH_MODES = EnumNames(search_pb2.SearchMode)
ROLE_KINDS = EnumNames(message_pb2.MessageKind)
BLOCK_OPERATIONS = EnumNames(block_pb2.BlockOperation)
BLOCK_EDITOR_TYPES = EnumNames(block_pb2.BlockEditorType)
BLOCK_EDIT_STATES = EnumNames(block_pb2.BlockEditState)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp for an optional datetime (naive means UTC)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return stamp


def block_create(body: BlockCreateRequest) -> block_pb2.CreateBlockRequest:
    """The CreateBlock request for a REST body."""
    return block_pb2.CreateBlockRequest(
        block=block_pb2.Block(
            label=body.label,
            value=body.value,
            limit=body.limit or 0,
            description=body.description,
            read_only=body.read_only,
            metadata=to_struct(body.metadata),
            is_template=body.is_template,
            template_name=body.template_name,
        ),
        agent_id=body.agent_id,
        from_template=body.from_template,
    )


def block_update(
    block_id: str, body: BlockUpdate, *, agent_id: str = "", label: str = ""
) -> block_pb2.UpdateBlockRequest:
    """The UpdateBlock request changing the fields set in `body` (of `block_id`, or of the agent's `label`)."""
    changes = body.model_dump(exclude_unset=True)
    request = block_pb2.UpdateBlockRequest(
        agent_id=agent_id,
        label=label,
        block=block_pb2.Block(
            id=block_id,
            label=body.label or "",
            value=body.value or "",
            limit=body.limit or 0,
            description=body.description or "",
            read_only=bool(body.read_only),
            metadata=to_struct(body.metadata),
        ),
    )
    request.update_mask.paths.extend(sorted(changes))
    return request


def template_out(block: block_pb2.Block) -> Template:
    """The REST form of a template."""
    return Template(
        id=block.id,
        template_name=block.template_name,
        label=block.label,
        value=block.value,
        limit=block.limit,
        description=block.description,
        read_only=block.read_only,
        metadata=from_struct(block.metadata),
        builtin=block.id.startswith("block-template-"),
    )


def score_out(score: search_pb2.SearchScore) -> Score:
    """The REST form of how a hit ranked."""
    return Score(
        score=score.score,
        vector_rank=score.vector_rank or None,
        similarity=score.similarity if score.vector_rank else None,
        keyword_rank=score.keyword_rank or None,
    )


def passage_out(passage: passage_pb2.Passage) -> Passage:
    """The REST form of a passage."""
    return Passage(
        id=passage.id,
        agent_id=passage.agent_id,
        source_id=passage.source_id,
        file_id=passage.file_id,
        text=passage.text,
        tags=list(passage.tags),
        speaker=passage.speaker,
        metadata=from_struct(passage.metadata),
        embedding_model=passage.embedding_model,
        embedding_dim=passage.embedding_dim,
        chunk_index=passage.chunk_index,
        created_at=field_time(passage, "create_time"),
    )


def message_hits(response: message_pb2.SearchMessagesResponse) -> MessageSearchResult:
    """The REST form of a recall search."""
    results = []
    for match in response.matches:
        message = convert.message_out(match.message)
        if message is not None:
            results.append(MessageHit(message=message, score=score_out(match.score)))
    return MessageSearchResult(
        results=results,
        embedding_model=response.embedding_model,
        pending_embeddings=response.pending_embeddings,
    )


def source_out(source: source_pb2.Source) -> Source:
    """The REST form of a source."""
    return Source(
        id=source.id,
        name=source.name,
        description=source.description,
        embedding_model=source.embedding_model,
        embedding_dim=source.embedding_dim,
        metadata=from_struct(source.metadata),
        agent_ids=list(source.agent_ids),
        created_at=field_time(source, "create_time"),
        updated_at=field_time(source, "update_time"),
    )


def job_out(job: source_pb2.Job) -> Job:
    """The REST form of a job."""
    return Job(
        id=job.id,
        file_id=job.file_id,
        source_id=job.source_id,
        status=JOB_STATUSES.name(job.status) or "unknown",
        chunks_total=job.chunks_total,
        chunks_done=job.chunks_done,
        progress=job.progress,
        error=job.error,
        created_at=field_time(job, "create_time"),
        updated_at=field_time(job, "update_time"),
        completed_at=field_time(job, "complete_time"),
    )


def file_out(file: source_pb2.File) -> File:
    """The REST form of a file."""
    return File(
        id=file.id,
        source_id=file.source_id,
        file_name=file.file_name,
        content_type=file.content_type,
        size_bytes=file.size_bytes,
        status=JOB_STATUSES.name(file.status) or "unknown",
        error=file.error,
        chunk_count=file.chunk_count,
        job_id=file.job_id,
        created_at=field_time(file, "create_time"),
        updated_at=field_time(file, "update_time"),
    )


def block_version_out(version: block_pb2.BlockVersion) -> BlockVersion:
    """The REST form of a block version."""
    return BlockVersion.model_validate(
        {
            "block_id": version.block_id,
            "version": version.version,
            "operation": BLOCK_OPERATIONS.name(version.operation),
            "editor_type": BLOCK_EDITOR_TYPES.name(version.editor_type),
            "editor_id": version.editor_id,
            "run_id": version.run_id or None,
            "before": version.before,
            "after": version.after,
            "state": BLOCK_EDIT_STATES.name(version.state) or None,
            "target_version": version.target_version or None,
            "created_at": field_time(version, "create_time"),
        }
    )
