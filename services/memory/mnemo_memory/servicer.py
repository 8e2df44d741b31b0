"""gRPC servicers of the memory service: proto <-> domain, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.memory.v1 import (
    block_pb2,
    block_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    passage_pb2,
    passage_pb2_grpc,
    search_pb2,
    source_pb2,
    source_pb2_grpc,
)
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import invalid, masked_changes
from mnemo_core.wire import field_time, from_struct, to_struct, to_timestamp
from mnemo_memory.archival import ArchivalMemory
from mnemo_memory.blocks import Block, BlockSpec
from mnemo_memory.core_memory import CoreMemory
from mnemo_memory.history import History
from mnemo_memory.passage_store import Passage
from mnemo_memory.ranking import Ranked
from mnemo_memory.recall import MESSAGE_KINDS, Recall
from mnemo_memory.sources import File, Job, Source, Sources

Context = Any  # grpc.aio.ServicerContext; unused by these thin handlers


def block_to_proto(block: Block) -> block_pb2.Block:
    """The wire form of a block."""
    return block_pb2.Block(
        id=block.id,
        label=block.label,
        value=block.value,
        limit=block.limit,
        description=block.description,
        read_only=block.read_only,
        agent_ids=block.agent_ids,
        metadata=to_struct(block.metadata),
        create_time=to_timestamp(block.created_at),
        update_time=to_timestamp(block.updated_at),
        is_template=block.is_template,
        template_name=block.template_name,
    )


def spec_from_proto(block: block_pb2.Block) -> BlockSpec:
    """What a wire block asks to create."""
    return BlockSpec(
        label=block.label,
        value=block.value,
        limit=block.limit,
        description=block.description,
        read_only=block.read_only,
        metadata=from_struct(block.metadata),
    )


_MASK_FIELDS: dict[str, Callable[[block_pb2.Block], Any]] = {
    "label": lambda b: b.label,
    "value": lambda b: b.value,
    "limit": lambda b: b.limit,
    "description": lambda b: b.description,
    "read_only": lambda b: b.read_only,
    "metadata": lambda b: from_struct(b.metadata),
}


class BlockServicer(block_pb2_grpc.BlockServiceServicer):
    """BlockService over CoreMemory."""

    def __init__(self, core: CoreMemory) -> None:
        self._core = core

    async def CreateBlock(
        self, request: block_pb2.CreateBlockRequest, context: Context
    ) -> block_pb2.CreateBlockResponse:
        block = await self._core.create(
            current_actor().org_id,
            spec_from_proto(request.block),
            agent_id=request.agent_id,
            from_template=request.from_template,
            is_template=request.block.is_template,
            template_name=request.block.template_name,
        )
        return block_pb2.CreateBlockResponse(block=block_to_proto(block))

    async def BatchCreateBlocks(
        self, request: block_pb2.BatchCreateBlocksRequest, context: Context
    ) -> block_pb2.BatchCreateBlocksResponse:
        blocks = await self._core.create_for_agent(
            current_actor().org_id, request.agent_id, [spec_from_proto(b) for b in request.blocks]
        )
        return block_pb2.BatchCreateBlocksResponse(blocks=[block_to_proto(b) for b in blocks])

    async def GetBlock(
        self, request: block_pb2.GetBlockRequest, context: Context
    ) -> block_pb2.GetBlockResponse:
        block = await self._core.get(
            current_actor().org_id, request.block_id, agent_id=request.agent_id, label=request.label
        )
        return block_pb2.GetBlockResponse(block=block_to_proto(block))

    async def ListBlocks(
        self, request: block_pb2.ListBlocksRequest, context: Context
    ) -> block_pb2.ListBlocksResponse:
        blocks, token = await self._core.list(
            current_actor().org_id,
            agent_id=request.agent_id,
            label=request.label,
            templates=request.templates,
            size=request.page_size,
            token=request.page_token,
        )
        return block_pb2.ListBlocksResponse(blocks=[block_to_proto(b) for b in blocks], next_page_token=token)

    async def UpdateBlock(
        self, request: block_pb2.UpdateBlockRequest, context: Context
    ) -> block_pb2.UpdateBlockResponse:
        changes = masked_changes(request.update_mask.paths, request.block, _MASK_FIELDS)
        block = await self._core.update(
            current_actor().org_id,
            request.block.id,
            changes,
            agent_id=request.agent_id,
            label=request.label,
        )
        return block_pb2.UpdateBlockResponse(block=block_to_proto(block))

    async def DeleteBlock(
        self, request: block_pb2.DeleteBlockRequest, context: Context
    ) -> block_pb2.DeleteBlockResponse:
        await self._core.delete(current_actor().org_id, request.block_id)
        return block_pb2.DeleteBlockResponse()

    async def AttachBlock(
        self, request: block_pb2.AttachBlockRequest, context: Context
    ) -> block_pb2.AttachBlockResponse:
        block = await self._core.attach(current_actor().org_id, request.block_id, request.agent_id)
        return block_pb2.AttachBlockResponse(block=block_to_proto(block))

    async def DetachBlock(
        self, request: block_pb2.DetachBlockRequest, context: Context
    ) -> block_pb2.DetachBlockResponse:
        block = await self._core.detach(current_actor().org_id, request.block_id, request.agent_id)
        return block_pb2.DetachBlockResponse(block=block_to_proto(block))

    async def AppendBlockValue(
        self, request: block_pb2.AppendBlockValueRequest, context: Context
    ) -> block_pb2.AppendBlockValueResponse:
        block = await self._core.append(
            current_actor().org_id, request.agent_id, request.label, request.content
        )
        return block_pb2.AppendBlockValueResponse(block=block_to_proto(block))

    async def ReplaceBlockValue(
        self, request: block_pb2.ReplaceBlockValueRequest, context: Context
    ) -> block_pb2.ReplaceBlockValueResponse:
        block = await self._core.replace(
            current_actor().org_id, request.agent_id, request.label, request.old_content, request.new_content
        )
        return block_pb2.ReplaceBlockValueResponse(block=block_to_proto(block))

    async def DetachAgentBlocks(
        self, request: block_pb2.DetachAgentBlocksRequest, context: Context
    ) -> block_pb2.DetachAgentBlocksResponse:
        deleted = await self._core.detach_agent(current_actor().org_id, request.agent_id)
        return block_pb2.DetachAgentBlocksResponse(deleted_count=deleted)


class MessageServicer(message_pb2_grpc.MessageServiceServicer):
    """MessageService over History and Recall."""

    def __init__(self, history: History, recall: Recall) -> None:
        self._history = history
        self._recall = recall

    async def AppendMessages(
        self, request: message_pb2.AppendMessagesRequest, context: Context
    ) -> message_pb2.AppendMessagesResponse:
        stored = await self._history.append(
            current_actor().org_id, request.agent_id, request.run_id, request.step, list(request.messages)
        )
        return message_pb2.AppendMessagesResponse(messages=stored)

    async def ListMessages(
        self, request: message_pb2.ListMessagesRequest, context: Context
    ) -> message_pb2.ListMessagesResponse:
        messages, token = await self._history.list(
            current_actor().org_id,
            request.agent_id,
            size=request.page_size,
            token=request.page_token,
            descending=request.order == message_pb2.LIST_ORDER_DESCENDING,
            before=request.before,
            after=request.after,
            run_id=request.run_id,
        )
        return message_pb2.ListMessagesResponse(messages=messages, next_page_token=token)

    async def GetContextWindow(
        self, request: message_pb2.GetContextWindowRequest, context: Context
    ) -> message_pb2.GetContextWindowResponse:
        window = await self._history.context_window(current_actor().org_id, request.agent_id)
        return window.response()

    async def CompactContextWindow(
        self, request: message_pb2.CompactContextWindowRequest, context: Context
    ) -> message_pb2.CompactContextWindowResponse:
        summary, evicted = await self._history.compact(
            current_actor().org_id,
            request.agent_id,
            request.keep_from_message_id,
            request.summary if request.HasField("summary") else None,
            expected_first=request.expected_first_message_id,
        )
        return message_pb2.CompactContextWindowResponse(summary=summary, evicted_count=evicted)

    async def PurgeAgentMessages(
        self, request: message_pb2.PurgeAgentMessagesRequest, context: Context
    ) -> message_pb2.PurgeAgentMessagesResponse:
        deleted = await self._history.purge(current_actor().org_id, request.agent_id)
        return message_pb2.PurgeAgentMessagesResponse(deleted_count=deleted)

    async def SearchMessages(
        self, request: message_pb2.SearchMessagesRequest, context: Context
    ) -> message_pb2.SearchMessagesResponse:
        kinds = []
        for i, kind in enumerate(request.kinds):
            name = MESSAGE_KINDS.name(kind)
            if not name:
                raise invalid(f"kinds[{i}]", "unknown message kind")
            kinds.append(name)
        hits, model, pending = await self._recall.search(
            current_actor().org_id,
            request.agent_id,
            request.query,
            top_k=request.top_k,
            kinds=kinds,
            start=field_time(request, "start_time"),
            end=field_time(request, "end_time"),
            mode=_search_mode(request.mode),
        )
        return message_pb2.SearchMessagesResponse(
            matches=[
                message_pb2.MessageMatch(message=hit.message, score=score_to_proto(hit.rank)) for hit in hits
            ],
            embedding_model=model,
            pending_embeddings=pending,
        )


_SEARCH_MODES = EnumNames(search_pb2.SearchMode)
_JOB_STATUSES = EnumNames(source_pb2.JobStatus)


def _search_mode(value: search_pb2.SearchMode.ValueType) -> str:
    """Hybrid when unset; a number this build does not know is refused by the search's own check."""
    return "hybrid" if value == search_pb2.SEARCH_MODE_UNSPECIFIED else _SEARCH_MODES.name(value)


def score_to_proto(rank: Ranked) -> search_pb2.SearchScore:
    """The wire form of how a hit ranked."""
    return search_pb2.SearchScore(
        score=rank.score,
        vector_rank=rank.vector_rank,
        similarity=rank.similarity,
        keyword_rank=rank.keyword_rank,
    )


def passage_to_proto(passage: Passage) -> passage_pb2.Passage:
    """The wire form of a passage."""
    return passage_pb2.Passage(
        id=passage.id,
        agent_id=passage.agent_id,
        source_id=passage.source_id,
        file_id=passage.file_id,
        text=passage.text,
        tags=passage.tags,
        embedding_model=passage.embedding_model,
        embedding_dim=passage.embedding_dim,
        speaker=passage.speaker,
        metadata=to_struct(passage.metadata),
        create_time=to_timestamp(passage.created_at),
        chunk_index=passage.chunk_index,
    )


class PassageServicer(passage_pb2_grpc.PassageServiceServicer):
    """PassageService over ArchivalMemory."""

    def __init__(self, archival: ArchivalMemory) -> None:
        self._archival = archival

    async def CreatePassages(
        self, request: passage_pb2.CreatePassagesRequest, context: Context
    ) -> passage_pb2.CreatePassagesResponse:
        passages = await self._archival.create(
            current_actor().org_id,
            request.agent_id,
            request.text,
            tags=list(request.tags),
            metadata=from_struct(request.metadata),
            speaker=request.speaker,
            created_at=field_time(request, "create_time"),
            model=request.embedding_model,
        )
        return passage_pb2.CreatePassagesResponse(passages=[passage_to_proto(p) for p in passages])

    async def GetPassage(
        self, request: passage_pb2.GetPassageRequest, context: Context
    ) -> passage_pb2.GetPassageResponse:
        passage = await self._archival.get(
            current_actor().org_id, request.passage_id, agent_id=request.agent_id
        )
        return passage_pb2.GetPassageResponse(passage=passage_to_proto(passage))

    async def ListPassages(
        self, request: passage_pb2.ListPassagesRequest, context: Context
    ) -> passage_pb2.ListPassagesResponse:
        passages, token = await self._archival.page(
            current_actor().org_id,
            agent_id=request.agent_id,
            source_id=request.source_id,
            size=request.page_size,
            token=request.page_token,
            descending=request.order == passage_pb2.PASSAGE_ORDER_DESCENDING,
        )
        return passage_pb2.ListPassagesResponse(
            passages=[passage_to_proto(p) for p in passages], next_page_token=token
        )

    async def SearchPassages(
        self, request: passage_pb2.SearchPassagesRequest, context: Context
    ) -> passage_pb2.SearchPassagesResponse:
        hits, model = await self._archival.search(
            current_actor().org_id,
            request.agent_id,
            request.query,
            top_k=request.top_k,
            tags=list(request.tags),
            all_tags=request.tag_match == passage_pb2.TAG_MATCH_ALL,
            start=field_time(request, "start_time"),
            end=field_time(request, "end_time"),
            mode=_search_mode(request.mode),
            model=request.embedding_model,
            exclude_sources=request.exclude_sources,
        )
        return passage_pb2.SearchPassagesResponse(
            matches=[
                passage_pb2.PassageMatch(
                    passage=passage_to_proto(hit.passage), score=score_to_proto(hit.rank)
                )
                for hit in hits
            ],
            embedding_model=model,
        )

    async def DeletePassage(
        self, request: passage_pb2.DeletePassageRequest, context: Context
    ) -> passage_pb2.DeletePassageResponse:
        await self._archival.delete(current_actor().org_id, request.passage_id, agent_id=request.agent_id)
        return passage_pb2.DeletePassageResponse()

    async def PurgeAgentPassages(
        self, request: passage_pb2.PurgeAgentPassagesRequest, context: Context
    ) -> passage_pb2.PurgeAgentPassagesResponse:
        deleted = await self._archival.purge(current_actor().org_id, request.agent_id)
        return passage_pb2.PurgeAgentPassagesResponse(deleted_count=deleted)


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
