"""/v1/agents/{id}/core-memory: an agent's blocks by label, attaching and detaching shared blocks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from mnemo.memory.v1 import block_pb2
from mnemo.rest.blocks import Block, BlockUpdate
from mnemo_gateway import convert
from mnemo_gateway import memory_convert as mc
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(prefix="/v1/agents", tags=["core memory"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]


@router.get("/{agent_id}/core-memory/blocks/{label}", response_model=Block)
async def get_core_memory_block(agent_id: str, label: str, mesh: Mesh) -> Block:
    """Returns the agent's block with this label."""
    await mesh.agent(agent_id)
    response = await mesh.blocks.GetBlock(block_pb2.GetBlockRequest(agent_id=agent_id, label=label))
    return convert.block_out(response.block)


@router.patch("/{agent_id}/core-memory/blocks/{label}", response_model=Block)
async def update_core_memory_block(agent_id: str, label: str, body: BlockUpdate, mesh: Mesh) -> Block:
    """Changes the agent's block with this label (read-only blocks too: only the agent's tools are refused)."""
    await mesh.agent(agent_id)
    response = await mesh.blocks.UpdateBlock(mc.block_update("", body, agent_id=agent_id, label=label))
    return convert.block_out(response.block)


@router.patch("/{agent_id}/core-memory/blocks/attach/{block_id}", response_model=Block)
async def attach_block(agent_id: str, block_id: str, mesh: Mesh) -> Block:
    """Attaches an existing block to the agent (sharing it with the agents that already have it)."""
    await mesh.agent(agent_id)
    response = await mesh.blocks.AttachBlock(
        block_pb2.AttachBlockRequest(block_id=block_id, agent_id=agent_id)
    )
    return convert.block_out(response.block)


@router.patch("/{agent_id}/core-memory/blocks/detach/{block_id}", response_model=Block)
async def detach_block(agent_id: str, block_id: str, mesh: Mesh) -> Block:
    """Detaches a block from the agent; the block stays."""
    await mesh.agent(agent_id)
    response = await mesh.blocks.DetachBlock(
        block_pb2.DetachBlockRequest(block_id=block_id, agent_id=agent_id)
    )
    return convert.block_out(response.block)
