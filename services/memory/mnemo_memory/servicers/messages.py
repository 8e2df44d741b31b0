"""MessageService: proto <-> message histories, context windows and recall search."""

from __future__ import annotations

from typing import Any

from mnemo.memory.v1 import message_pb2, message_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.validation import invalid
from mnemo_core.wire import field_time
from mnemo_memory.history import History
from mnemo_memory.recall import MESSAGE_KINDS, Recall
from mnemo_memory.servicers.search import score_to_proto, search_mode

Context = Any  # grpc.aio.ServicerContext; unused by these thin handlers


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
            mode=search_mode(request.mode),
        )
        return message_pb2.SearchMessagesResponse(
            matches=[
                message_pb2.MessageMatch(message=hit.message, score=score_to_proto(hit.rank)) for hit in hits
            ],
            embedding_model=model,
            pending_embeddings=pending,
        )
