"""gRPC servicer of the llm-gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_llm.gateway import LlmGateway

Context = Any


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    """LlmService over the LlmGateway."""

    def __init__(self, gateway: LlmGateway) -> None:
        self._gateway = gateway

    async def Chat(self, request: llm_pb2.ChatRequest, context: Context) -> llm_pb2.ChatResponse:
        return await self._gateway.chat(request)

    async def StreamChat(
        self, request: llm_pb2.StreamChatRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        events = self._gateway.stream(request)
        try:
            async for event in events:
                yield event
        finally:
            # Runs when the caller cancels too: the provider's request is closed with it.
            await events.aclose()  # type: ignore[attr-defined]

    async def Embed(self, request: llm_pb2.EmbedRequest, context: Context) -> llm_pb2.EmbedResponse:
        return await self._gateway.embed(request)

    async def CountTokens(
        self, request: llm_pb2.CountTokensRequest, context: Context
    ) -> llm_pb2.CountTokensResponse:
        return await self._gateway.count_tokens(request)

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: Context
    ) -> llm_pb2.ListModelsResponse:
        return await self._gateway.list_models(request)

    async def SummarizeUsage(
        self, request: llm_pb2.SummarizeUsageRequest, context: Context
    ) -> llm_pb2.SummarizeUsageResponse:
        return await self._gateway.summarize_usage(request)

    async def CreateChatBatch(
        self, request: llm_pb2.CreateChatBatchRequest, context: Context
    ) -> llm_pb2.CreateChatBatchResponse:
        return llm_pb2.CreateChatBatchResponse(batch=await self._gateway.create_chat_batch(request))

    async def GetChatBatch(
        self, request: llm_pb2.GetChatBatchRequest, context: Context
    ) -> llm_pb2.GetChatBatchResponse:
        return llm_pb2.GetChatBatchResponse(batch=await self._gateway.get_chat_batch(request))

    async def CancelChatBatch(
        self, request: llm_pb2.CancelChatBatchRequest, context: Context
    ) -> llm_pb2.CancelChatBatchResponse:
        return llm_pb2.CancelChatBatchResponse(batch=await self._gateway.cancel_chat_batch(request))
