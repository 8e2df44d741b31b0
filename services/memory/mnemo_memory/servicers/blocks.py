"""BlockService: proto <-> core memory (blocks, shared blocks, templates)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.validation import masked_changes
from mnemo_core.wire import from_struct, to_struct, to_timestamp
from mnemo_memory.blocks import Block, BlockSpec
from mnemo_memory.core_memory import CoreMemory

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
