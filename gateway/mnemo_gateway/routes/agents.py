"""/v1/agents: agents, their core memory and their messages."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status

from mnemo.agent.v1 import agent_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_gateway import convert, schemas
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(prefix="/v1/agents", tags=["agents"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.Agent)
async def create_agent(body: schemas.AgentCreate, mesh: Mesh) -> schemas.Agent:
    """Creates an agent with its initial core memory blocks."""
    response = await mesh.agents.CreateAgent(convert.agent_in(body))
    return convert.agent_out(response.agent)


@router.get("", response_model=list[schemas.Agent])
async def list_agents(
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
    name: str = "",
    tags: Annotated[list[str] | None, Query()] = None,
) -> list[schemas.Agent]:
    """Lists agents, newest first; the `X-Next-Page-Token` header continues the listing."""
    page = await mesh.agents.ListAgents(
        agent_pb2.ListAgentsRequest(page_size=limit, page_token=page_token, name=name, tags=tags or [])
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [convert.agent_out(agent) for agent in page.agents]


@router.get("/{agent_id}", response_model=schemas.Agent)
async def get_agent(agent_id: str, mesh: Mesh) -> schemas.Agent:
    """Returns one agent with its core memory blocks."""
    response = await mesh.agents.GetAgent(agent_pb2.GetAgentRequest(agent_id=agent_id))
    return convert.agent_out(response.agent)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(agent_id: str, mesh: Mesh) -> Response:
    """Deletes an agent with its history and the blocks created for it."""
    await mesh.agents.DeleteAgent(agent_pb2.DeleteAgentRequest(agent_id=agent_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{agent_id}/core-memory/blocks", response_model=list[schemas.Block])
async def list_core_memory_blocks(agent_id: str, mesh: Mesh) -> list[schemas.Block]:
    """Lists the agent's core memory blocks."""
    response = await mesh.agents.GetAgent(agent_pb2.GetAgentRequest(agent_id=agent_id))
    return [convert.block_out(block) for block in response.agent.blocks]


@router.post("/{agent_id}/messages", response_model=schemas.SendMessageResponse)
async def send_message(
    agent_id: str,
    body: schemas.SendMessageRequest,
    mesh: Mesh,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=256)] = "",
) -> schemas.SendMessageResponse:
    """Runs one agent turn and returns its new messages, stop reason and usage.

    Send an `Idempotency-Key` header to make retries safe: a retry returns the first result.
    """
    result = await mesh.agents.SendMessage(
        agent_pb2.SendMessageRequest(
            agent_id=agent_id,
            messages=[convert.message_in(m) for m in body.messages],
            max_steps=body.max_steps,
            idempotency_key=idempotency_key,
        )
    )
    return schemas.SendMessageResponse(
        messages=convert.messages_out(list(result.messages)),
        stop_reason=schemas.StopReason(stop_reason=convert.STOP_REASONS.get(result.stop_reason, "error")),
        usage=convert.usage_out(result.usage),
        run_id=result.run_id,
    )


@router.get("/{agent_id}/messages", response_model=list[schemas.Message])
async def list_messages(
    agent_id: str,
    mesh: Mesh,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: str = "",
    after: str = "",
    order: Literal["asc", "desc"] = "asc",
) -> list[schemas.Message]:
    """Lists the agent's message history; page with `before` / `after` message ids."""
    await mesh.agents.GetAgent(agent_pb2.GetAgentRequest(agent_id=agent_id))
    page = await mesh.messages.ListMessages(
        history_pb2.ListMessagesRequest(
            agent_id=agent_id,
            page_size=limit,
            before=before,
            after=after,
            order=history_pb2.LIST_ORDER_DESCENDING if order == "desc" else history_pb2.LIST_ORDER_ASCENDING,
        )
    )
    return convert.messages_out(list(page.messages))
