"""/v1/blocks: core memory blocks and block templates, shared between agents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from mnemo.memory.v1 import block_pb2
from mnemo.rest.blocks import Block, BlockCreateRequest, BlockRestore, BlockUpdate, BlockVersion, Template
from mnemo_gateway import convert
from mnemo_gateway import memory_convert as mc
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(prefix="/v1/blocks", tags=["blocks"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Block)
async def create_block(body: BlockCreateRequest, mesh: Mesh) -> Block:
    """Creates a block (attached to `agent_id` if given), a template (`is_template`), or a block from a template."""
    if body.agent_id:
        await mesh.agent(body.agent_id)
    response = await mesh.blocks.CreateBlock(mc.block_create(body))
    return convert.block_out(response.block)


@router.get("", response_model=list[Block])
async def list_blocks(
    mesh: Mesh,
    response: Response,
    label: str = "",
    agent_id: str = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[Block]:
    """Lists blocks, oldest first, optionally by label or agent; `X-Next-Page-Token` continues."""
    if agent_id:
        await mesh.agent(agent_id)
    page = await mesh.blocks.ListBlocks(
        block_pb2.ListBlocksRequest(agent_id=agent_id, label=label, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [convert.block_out(block) for block in page.blocks]


@router.get("/templates", response_model=list[Template])
async def list_templates(
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[Template]:
    """Lists block templates: the organization's and the built-in ones (persona, human)."""
    page = await mesh.blocks.ListBlocks(
        block_pb2.ListBlocksRequest(templates=True, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [mc.template_out(block) for block in page.blocks]


@router.get("/{block_id}", response_model=Block)
async def get_block(block_id: str, mesh: Mesh) -> Block:
    """Returns one block (or template)."""
    response = await mesh.blocks.GetBlock(block_pb2.GetBlockRequest(block_id=block_id))
    return convert.block_out(response.block)


@router.patch("/{block_id}", response_model=Block)
async def update_block(block_id: str, body: BlockUpdate, mesh: Mesh) -> Block:
    """Changes the fields given; the value must fit the limit. Every agent sharing it sees the change."""
    response = await mesh.blocks.UpdateBlock(mc.block_update(block_id, body))
    return convert.block_out(response.block)


@router.delete("/{block_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_block(block_id: str, mesh: Mesh) -> Response:
    """Deletes a block and detaches it from every agent."""
    await mesh.blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=block_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{block_id}/history", response_model=list[BlockVersion])
async def list_block_history(
    block_id: str,
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[BlockVersion]:
    """The kept versions of the block's value, newest first: editor, run, value before and after.
    `X-Next-Page-Token` continues."""
    page = await mesh.blocks.ListBlockVersions(
        block_pb2.ListBlockVersionsRequest(block_id=block_id, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [mc.block_version_out(version) for version in page.versions]


@router.post("/{block_id}/undo", response_model=Block)
async def undo_block_edit(block_id: str, mesh: Mesh) -> Block:
    """Undoes the latest edit of the value not undone yet (400 NOTHING_TO_UNDO when there is none)."""
    response = await mesh.blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block_id))
    return convert.block_out(response.block)


@router.post("/{block_id}/redo", response_model=Block)
async def redo_block_edit(block_id: str, mesh: Mesh) -> Block:
    """Applies again the edit undone last, unless an edit came after it (400 NOTHING_TO_REDO)."""
    response = await mesh.blocks.RedoBlockEdit(block_pb2.RedoBlockEditRequest(block_id=block_id))
    return convert.block_out(response.block)


@router.post("/{block_id}/restore", response_model=Block)
async def restore_block_version(block_id: str, body: BlockRestore, mesh: Mesh) -> Block:
    """Gives the block the value of a kept version again (an edit that can be undone)."""
    response = await mesh.blocks.RestoreBlockVersion(
        block_pb2.RestoreBlockVersionRequest(block_id=block_id, version=body.version)
    )
    return convert.block_out(response.block)
