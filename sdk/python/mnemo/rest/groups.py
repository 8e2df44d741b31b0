"""/v1/groups: groups of agents that answer together, their runs, and messages to them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from mnemo.rest.blocks import BlockCreate
from mnemo.rest.common import MAX_INT32, RequestBody
from mnemo.rest.messages import (
    AssistantMessage,
    ContentDelta,
    EventMessage,
    Message,
    MessageCreate,
    ReasoningDelta,
    ReasoningMessage,
    StopReason,
    StreamStopReason,
    SystemMessage,
    ToolCallMessage,
    ToolReturnMessage,
    Usage,
    UserMessage,
)

ManagerType = Literal["round_robin", "supervisor", "dynamic", "sleeptime"]


class GroupManager(BaseModel):
    """Who speaks when."""

    type: ManagerType = Field(
        default="round_robin",
        description=(
            "round_robin: the agents speak in turn; supervisor: the manager agent delegates to every agent and "
            "answers with what they said; dynamic: the manager agent names each next speaker until it says "
            "the termination token; sleeptime: the manager agent answers, the agents are memory agents that "
            "reorganise its blocks in the background."
        ),
    )
    manager_agent_id: str = Field(
        default="", description="Supervisor, dynamic, sleeptime: the manager agent."
    )
    max_turns: int = Field(
        default=0,
        ge=0,
        le=MAX_INT32,
        description="Most member turns per message; 0 = one each (round robin), 10.",
    )
    termination_token: str = Field(
        default="", description="Dynamic: the manager's answer that ends; '' = DONE."
    )
    sleeptime_frequency: int = Field(
        default=0, ge=0, le=MAX_INT32, description="Sleeptime: every N turns; 0 = 5."
    )


class GroupCreate(RequestBody):
    """A group to create, of existing agents of the caller's organization."""

    name: str
    description: str = ""
    agent_ids: list[str] = Field(min_length=1, description="The members in speaking order (not the manager).")
    manager: GroupManager = Field(default_factory=GroupManager)
    shared_block_ids: list[str] = Field(
        default_factory=list, description="Existing blocks every agent shares."
    )
    shared_blocks: list[BlockCreate] = Field(
        default_factory=list,
        description="Blocks created for the group, shared by every agent, deleted with it.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class Group(BaseModel):
    """A group of agents."""

    id: str
    name: str
    description: str
    agent_ids: list[str]
    manager: GroupManager
    shared_block_ids: list[str]
    metadata: dict[str, Any]
    created_at: datetime | None


class GroupMessageRequest(RequestBody):
    """A message to a group."""

    messages: list[MessageCreate] = Field(min_length=1)
    max_turns: int = Field(default=0, ge=0, le=MAX_INT32, description="Most member turns; 0 = the group's.")
    stream_tokens: bool = Field(
        default=False, description="Streaming only: the members' text as it is written."
    )


class GroupMessageResponse(BaseModel):
    """What the group answered: every member's new messages in order (each names its agent_id)."""

    messages: list[Message]
    stop_reason: StopReason
    usage: Usage
    group_run_id: str
    run_ids: list[str] = Field(description="The member turns' runs, in order.")


class GroupRun(BaseModel):
    """One message sent to a group."""

    id: str
    group_id: str
    status: Literal["created", "running", "completed", "failed", "cancelled", "awaiting_approval"]
    stop_reason: str | None
    usage: Usage
    idempotency_key: str | None
    run_ids: list[str]
    error: str | None
    created_at: datetime | None
    completed_at: datetime | None


class MemberTurn(BaseModel):
    """A streamed group run: a member's turn begins."""

    message_type: Literal["member_turn"] = "member_turn"
    agent_id: str
    run_id: str
    turn: int


class GroupStopReason(StreamStopReason):
    """Why a streamed group run ended; `run_id` is the group run's id, as `group_run_id`."""

    group_run_id: str
    run_ids: list[str]


# One Server-Sent Event of a streamed group run: a member's turn begins, its stored messages and token deltas,
# then the group's stop reason and usage; `data: [DONE]` ends the stream.
GroupStreamEvent = Annotated[
    UserMessage
    | SystemMessage
    | AssistantMessage
    | ReasoningMessage
    | ToolCallMessage
    | ToolReturnMessage
    | EventMessage
    | ContentDelta
    | ReasoningDelta
    | MemberTurn
    | GroupStopReason
    | Usage,
    Field(discriminator="message_type"),
]
