"""BlockService: proto <-> core memory (blocks, shared blocks, templates)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import masked_changes
from mnemo_core.wire import from_struct, to_struct, to_timestamp
from mnemo_memory.block_versions import BlockHistory
from mnemo_memory.blocks import Block, BlockSpec, BlockVersion, Editor
from mnemo_memory.core_memory import CoreMemory

Context = Any  # grpc.aio.ServicerContext; unused by these thin handlers
OPERATIONS = EnumNames(block_pb2.BlockOperation)
EDITOR_TYPES = EnumNames(block_pb2.BlockEditorType)
EDIT_STATES = EnumNames(block_pb2.BlockEditState)


def _user() -> Editor:
    """The caller of the API as the editor of a block."""
    return Editor("user", current_actor().user_id)


def _agent(agent_id: str, run_id: str) -> Editor:
    """An agent's memory tool, in a run, as the editor of a block."""
    return Editor("agent", agent_id, run_id)


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
        version=block.version,
    )


def version_to_proto(version: BlockVersion) -> block_pb2.BlockVersion:
    """The wire form of a block version."""
    return block_pb2.BlockVersion(
        block_id=version.block_id,
        version=version.version,
        operation=OPERATIONS.value(version.operation),
        editor_type=EDITOR_TYPES.value(version.editor.type),
        editor_id=version.editor.id,
        run_id=version.editor.run_id,
        before=version.before,
        after=version.after,
        state=EDIT_STATES.value(version.state) if version.state else block_pb2.BLOCK_EDIT_STATE_UNSPECIFIED,
        target_version=version.target_version or 0,
        create_time=to_timestamp(version.created_at),
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

    def __init__(self, core: CoreMemory, history: BlockHistory) -> None:
        self._core = core
        self._history = history

    async def CreateBlock(
        self, request: block_pb2.CreateBlockRequest, context: Context
    ) -> block_pb2.CreateBlockResponse:
        block = await self._core.create(
            current_actor().org_id,
            spec_from_proto(request.block),
            _user(),
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
            current_actor().org_id, request.agent_id, [spec_from_proto(b) for b in request.blocks], _user()
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
            _user(),
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
            current_actor().org_id,
            request.agent_id,
            request.label,
            request.content,
            _agent(request.agent_id, request.run_id),
        )
        return block_pb2.AppendBlockValueResponse(block=block_to_proto(block))

    async def ReplaceBlockValue(
        self, request: block_pb2.ReplaceBlockValueRequest, context: Context
    ) -> block_pb2.ReplaceBlockValueResponse:
        block = await self._core.replace(
            current_actor().org_id,
            request.agent_id,
            request.label,
            request.old_content,
            request.new_content,
            _agent(request.agent_id, request.run_id),
            unique=request.unique,
        )
        return block_pb2.ReplaceBlockValueResponse(block=block_to_proto(block))

    async def DetachAgentBlocks(
        self, request: block_pb2.DetachAgentBlocksRequest, context: Context
    ) -> block_pb2.DetachAgentBlocksResponse:
        deleted = await self._core.detach_agent(current_actor().org_id, request.agent_id)
        return block_pb2.DetachAgentBlocksResponse(deleted_count=deleted)

    async def InsertBlockValue(
        self, request: block_pb2.InsertBlockValueRequest, context: Context
    ) -> block_pb2.InsertBlockValueResponse:
        block = await self._core.insert(
            current_actor().org_id,
            request.agent_id,
            request.label,
            request.text,
            request.after_line if request.HasField("after_line") else None,
            _agent(request.agent_id, request.run_id),
        )
        return block_pb2.InsertBlockValueResponse(block=block_to_proto(block))

    async def RewriteBlockValue(
        self, request: block_pb2.RewriteBlockValueRequest, context: Context
    ) -> block_pb2.RewriteBlockValueResponse:
        block = await self._core.rewrite(
            current_actor().org_id,
            request.agent_id,
            request.label,
            request.value,
            _agent(request.agent_id, request.run_id),
        )
        return block_pb2.RewriteBlockValueResponse(block=block_to_proto(block))

    async def ListBlockVersions(
        self, request: block_pb2.ListBlockVersionsRequest, context: Context
    ) -> block_pb2.ListBlockVersionsResponse:
        versions, token = await self._history.list(
            current_actor().org_id, request.block_id, size=request.page_size, token=request.page_token
        )
        return block_pb2.ListBlockVersionsResponse(
            versions=[version_to_proto(v) for v in versions], next_page_token=token
        )

    async def UndoBlockEdit(
        self, request: block_pb2.UndoBlockEditRequest, context: Context
    ) -> block_pb2.UndoBlockEditResponse:
        block, version = await self._history.undo(current_actor().org_id, request.block_id, _user())
        return block_pb2.UndoBlockEditResponse(block=block_to_proto(block), version=version_to_proto(version))

    async def RedoBlockEdit(
        self, request: block_pb2.RedoBlockEditRequest, context: Context
    ) -> block_pb2.RedoBlockEditResponse:
        block, version = await self._history.redo(current_actor().org_id, request.block_id, _user())
        return block_pb2.RedoBlockEditResponse(block=block_to_proto(block), version=version_to_proto(version))

    async def RestoreBlockVersion(
        self, request: block_pb2.RestoreBlockVersionRequest, context: Context
    ) -> block_pb2.RestoreBlockVersionResponse:
        block, version = await self._history.restore(
            current_actor().org_id, request.block_id, request.version, _user()
        )
        response = block_pb2.RestoreBlockVersionResponse(block=block_to_proto(block))
        if version is not None:
            response.version.CopyFrom(version_to_proto(version))
        return response
