"""/v1/agents: agents, their core memory and their messages."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from google.protobuf import json_format

from mnemo.agent.v1 import agent_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.rest.agents import Agent, AgentCreate, AgentUpdate, ContextBreakdown, SystemPrompt
from mnemo.rest.blocks import Block
from mnemo.rest.messages import (
    ContentDelta,
    EphemeralRequest,
    EphemeralResponse,
    Message,
    ReasoningDelta,
    SendMessageRequest,
    SendMessageResponse,
    StopReason,
    StreamStopReason,
    SummarizeResponse,
)
from mnemo.rest.runs import Run
from mnemo_core.actor import Actor
from mnemo_gateway import convert
from mnemo_gateway.backends import Backends, acting_actor, backends
from mnemo_gateway.routes.agent_files import AGENT_FILE_BODY, AGENT_FILE_RESPONSE, agent_file_of
from mnemo_gateway.sse import event_stream, sse

router = APIRouter(prefix="/v1/agents", tags=["agents"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Agent)
async def create_agent(body: AgentCreate, mesh: Mesh) -> Agent:
    """Creates an agent with its initial core memory blocks."""
    response = await mesh.agents.CreateAgent(convert.agent_in(body))
    return convert.agent_out(response.agent)


@router.get("", response_model=list[Agent])
async def list_agents(
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
    name: str = "",
    tags: Annotated[list[str] | None, Query()] = None,
    identity_id: Annotated[str, Query(description="Only the agents of this identity (end user).")] = "",
) -> list[Agent]:
    """Lists agents, newest first; the `X-Next-Page-Token` header continues the listing."""
    page = await mesh.agents.ListAgents(
        agent_pb2.ListAgentsRequest(
            page_size=limit, page_token=page_token, name=name, tags=tags or [], end_user_id=identity_id
        )
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [convert.agent_out(agent) for agent in page.agents]


@router.post("/ephemeral/messages", response_model=EphemeralResponse)
async def send_ephemeral_message(body: EphemeralRequest, mesh: Mesh) -> EphemeralResponse:
    """Runs one turn of an agent given inline, with its context in the request. Nothing is stored.

    Core memory is read-only here: memory tools answer with an error the model sees.
    """
    agent = body.agent
    result = await mesh.agents.SendEphemeralMessage(
        agent_pb2.SendEphemeralMessageRequest(
            agent=agent_pb2.Agent(
                model=agent.model,
                system=agent.system,
                tool_ids=agent.tool_ids,
                tool_rules=convert.tool_rules_in(agent.tool_rules),
                llm_options=convert.llm_options_in(agent.llm_options),
                context_window=agent.context_window,
                max_steps=agent.max_steps,
            ),
            memory_blocks=[convert.block_in(b) for b in body.memory_blocks],
            context=convert.context_in(body.context),
            messages=[convert.message_in(m) for m in body.messages],
            max_steps=body.max_steps,
        )
    )
    return EphemeralResponse(
        messages=convert.messages_out(list(result.messages)),
        stop_reason=StopReason(stop_reason=convert.STOP_REASONS.name(result.stop_reason) or "error"),
        usage=convert.usage_out(result.usage),
    )


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    response_model=Agent,
    openapi_extra={"requestBody": AGENT_FILE_BODY},
)
async def import_agent(request: Request, mesh: Mesh) -> Agent:
    """Imports an agent file (the JSON body, or a multipart `file`): every agent in it is created anew, all
    or nothing. Answers the new agent (the file's first). Files of earlier versions are upgraded; newer
    ones are refused (422 AGENT_FILE_VERSION_UNSUPPORTED)."""
    response = await mesh.agents.ImportAgent(
        agent_pb2.ImportAgentRequest(agent_file=await agent_file_of(request))
    )
    return convert.agent_out(response.agent)


@router.get("/{agent_id}/export", response_class=Response, responses={200: AGENT_FILE_RESPONSE})
async def export_agent(agent_id: str, mesh: Mesh, include_passages: bool = False) -> Response:
    """The agent as one agent file (docs/schemas/agent-file.v1.json): configuration, blocks, tools with their
    source, tool rules, MCP tool references, history, sources and, with `include_passages`, archival memory."""
    response = await mesh.agents.ExportAgent(
        agent_pb2.ExportAgentRequest(agent_id=agent_id, include_passages=include_passages)
    )
    return Response(response.agent_file, media_type="application/json")


@router.get("/{agent_id}", response_model=Agent)
async def get_agent(agent_id: str, mesh: Mesh) -> Agent:
    """Returns one agent with its core memory blocks."""
    return convert.agent_out(await mesh.agent(agent_id))


@router.patch("/{agent_id}", response_model=Agent)
async def update_agent(agent_id: str, body: AgentUpdate, mesh: Mesh) -> Agent:
    """Changes the given fields of an agent; its next turn uses them."""
    response = await mesh.agents.UpdateAgent(convert.agent_update_in(agent_id, body))
    return convert.agent_out(response.agent)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(agent_id: str, mesh: Mesh) -> Response:
    """Deletes an agent with its history and the blocks created for it."""
    await mesh.agents.DeleteAgent(agent_pb2.DeleteAgentRequest(agent_id=agent_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{agent_id}/core-memory/blocks", response_model=list[Block])
async def list_core_memory_blocks(agent_id: str, mesh: Mesh) -> list[Block]:
    """Lists the agent's core memory blocks."""
    return [convert.block_out(block) for block in (await mesh.agent(agent_id)).blocks]


@router.post("/{agent_id}/messages", response_model=SendMessageResponse)
async def send_message(
    agent_id: str,
    body: SendMessageRequest,
    mesh: Mesh,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=256)] = "",
) -> Response:
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
    body_out = SendMessageResponse(
        messages=convert.messages_out(list(result.messages)),
        stop_reason=StopReason(stop_reason=convert.STOP_REASONS.name(result.stop_reason) or "error"),
        usage=convert.usage_out(result.usage),
        run_id=result.run_id,
    )
    # Serialized once here: returning the model would make FastAPI validate it a second time.
    return Response(body_out.model_dump_json(), media_type="application/json")


def _event_json(event: agent_pb2.StreamMessageResponse) -> list[str]:
    kind = event.WhichOneof("event")
    if kind == "run_id":
        return []  # the stop_reason event names the run
    if kind == "message":
        out = convert.message_out(event.message)
        return [] if out is None else [sse(out)]
    if kind == "delta":
        delta = event.delta
        if delta.kind == agent_pb2.DELTA_KIND_REASONING:
            return [sse(ReasoningDelta(run_id=delta.run_id, step=delta.step, reasoning=delta.text))]
        return [sse(ContentDelta(run_id=delta.run_id, step=delta.step, content=delta.text))]
    outcome = event.outcome
    return [
        sse(
            StreamStopReason(
                stop_reason=convert.STOP_REASONS.name(outcome.stop_reason) or "error", run_id=outcome.run_id
            )
        ),
        sse(convert.usage_out(outcome.usage)),
    ]


@router.post(
    "/{agent_id}/messages/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
)
async def stream_message(
    agent_id: str,
    body: SendMessageRequest,
    mesh: Mesh,
    actor: Annotated[Actor, Depends(acting_actor)],
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=256)] = "",
) -> StreamingResponse:
    """Runs one agent turn and streams it as Server-Sent Events: one `data: <JSON>` per event.

    Events are the turn's messages (the same shapes as the non-streaming response) as each step is
    stored, token deltas (`assistant_message_delta`, `reasoning_message_delta`) with
    `"stream_tokens": true`, then `stop_reason` (with the run id) and `usage_statistics`, then
    `data: [DONE]`. A client that disconnects cancels the turn; its run records that.
    """
    call = mesh.agents.StreamMessage(
        agent_pb2.StreamMessageRequest(
            agent_id=agent_id,
            messages=[convert.message_in(m) for m in body.messages],
            max_steps=body.max_steps,
            idempotency_key=idempotency_key,
            stream_tokens=body.stream_tokens,
        )
    )
    return await event_stream(call, actor, mesh, _event_json)


@router.post("/{agent_id}/messages/async", status_code=status.HTTP_202_ACCEPTED, response_model=Run)
async def send_message_async(
    agent_id: str,
    body: SendMessageRequest,
    mesh: Mesh,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=256)] = "",
) -> Run:
    """Starts a turn in the background and returns its run at once; poll `GET /v1/runs/{run_id}`."""
    response = await mesh.agents.SendMessageAsync(
        agent_pb2.SendMessageAsyncRequest(
            agent_id=agent_id,
            messages=[convert.message_in(m) for m in body.messages],
            max_steps=body.max_steps,
            idempotency_key=idempotency_key,
        )
    )
    return convert.run_out(response.run)


@router.post("/{agent_id}/summarize", response_model=SummarizeResponse)
async def summarize(agent_id: str, mesh: Mesh) -> SummarizeResponse:
    """Summarizes the oldest ~30 % of the agent's context window now (the messages stay in history)."""
    response = await mesh.agents.SummarizeAgent(agent_pb2.SummarizeAgentRequest(agent_id=agent_id))
    return SummarizeResponse(
        evicted_count=response.evicted_count,
        summary=convert.message_out(response.summary) if response.HasField("summary") else None,
    )


@router.post("/{agent_id}/recompile", response_model=SystemPrompt)
async def recompile(agent_id: str, mesh: Mesh) -> SystemPrompt:
    """Compiles the agent's system prompt from its current memory (e.g. after blocks were edited)."""
    response = await mesh.agents.RecompileAgent(agent_pb2.RecompileAgentRequest(agent_id=agent_id))
    return SystemPrompt(system_prompt=response.system_prompt)


@router.get("/{agent_id}/messages", response_model=list[Message])
async def list_messages(
    agent_id: str,
    mesh: Mesh,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: str = "",
    after: str = "",
    order: Literal["asc", "desc"] = "asc",
) -> list[Message]:
    """Lists the agent's message history; page with `before` / `after` message ids."""
    await mesh.agent(agent_id)
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


@router.get("/{agent_id}/context", response_model=ContextBreakdown)
async def get_agent_context(agent_id: str, mesh: Mesh) -> ContextBreakdown:
    """How the agent's next model call would fill its context window now: tokens per section (system
    prompt, core memory, tool schemas, summary, messages), counted for its model, and the window size."""
    found = (await mesh.agents.GetAgentContext(agent_pb2.GetAgentContextRequest(agent_id=agent_id))).context
    return ContextBreakdown.model_validate(
        json_format.MessageToDict(
            found, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )
