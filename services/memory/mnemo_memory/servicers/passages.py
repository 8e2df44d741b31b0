"""PassageService: proto <-> archival memory."""

from __future__ import annotations

from typing import Any

from mnemo.memory.v1 import passage_pb2, passage_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.wire import field_time, from_struct, to_struct, to_timestamp
from mnemo_memory.archival import ArchivalMemory
from mnemo_memory.passage_store import Passage
from mnemo_memory.servicers.search import score_to_proto, search_mode

Context = Any  # grpc.aio.ServicerContext; unused by these thin handlers


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
            mode=search_mode(request.mode),
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
