"""/v1/agents/{id}/core-memory: an agent's blocks by label, attaching and detaching shared blocks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from mnemo.agent.v1 import agent_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.rest.blocks import Block, BlockUpdate
from mnemo_core.errors import NotFound
from mnemo_gateway import convert
from mnemo_gateway import memory_convert as mc
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(prefix="/v1/agents", tags=["core memory"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]


async def agent_of(mesh: Backends, agent_id: str) -> agent_pb2.Agent:
    """The agent, or 404 when it does not exist in the caller's organization."""
    response = await mesh.agents.GetAgent(agent_pb2.GetAgentRequest(agent_id=agent_id))
    return response.agent


async def _block_by_label(mesh: Backends, agent_id: str, label: str) -> block_pb2.Block:
    await agent_of(mesh, agent_id)
    page = await mesh.blocks.ListBlocks(
        block_pb2.ListBlocksRequest(agent_id=agent_id, label=label, page_size=1)
    )
    if not page.blocks:
        raise NotFound(
            f"agent {agent_id} has no block labelled '{label}'",
            reason="BLOCK_NOT_FOUND",
            metadata={"label": label},
        )
    return page.blocks[0]


@router.get("/{agent_id}/core-memory/blocks/{label}", response_model=Block)
async def get_core_memory_block(agent_id: str, label: str, mesh: Mesh) -> Block:
    """Returns the agent's block with this label."""
    return convert.block_out(await _block_by_label(mesh, agent_id, label))


@router.patch("/{agent_id}/core-memory/blocks/{label}", response_model=Block)
async def update_core_memory_block(agent_id: str, label: str, body: BlockUpdate, mesh: Mesh) -> Block:
    """Changes the agent's block with this label (read-only blocks too: only the agent's tools are refused)."""
    block = await _block_by_label(mesh, agent_id, label)
    response = await mesh.blocks.UpdateBlock(mc.block_update(block.id, body))
    return convert.block_out(response.block)


@router.patch("/{agent_id}/core-memory/blocks/attach/{block_id}", response_model=Block)
async def attach_block(agent_id: str, block_id: str, mesh: Mesh) -> Block:
    """Attaches an existing block to the agent (sharing it with the agents that already have it)."""
    await agent_of(mesh, agent_id)
    response = await mesh.blocks.AttachBlock(
        block_pb2.AttachBlockRequest(block_id=block_id, agent_id=agent_id)
    )
    return convert.block_out(response.block)


@router.patch("/{agent_id}/core-memory/blocks/detach/{block_id}", response_model=Block)
async def detach_block(agent_id: str, block_id: str, mesh: Mesh) -> Block:
    """Detaches a block from the agent; the block stays."""
    await agent_of(mesh, agent_id)
    response = await mesh.blocks.DetachBlock(
        block_pb2.DetachBlockRequest(block_id=block_id, agent_id=agent_id)
    )
    return convert.block_out(response.block)
