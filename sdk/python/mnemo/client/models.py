"""The typed results of the client: the gateway's own response models (the JSON contract), re-exported."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from pydantic import Field

from mnemo_gateway.identity_schemas import ApiKey, ApiKeyCreated, Organization, User
from mnemo_gateway.memory_schemas import (
    File,
    Job,
    Passage,
    PassageHit,
    PassageSearchResult,
    Source,
    Upload,
)
from mnemo_gateway.schemas import (
    Agent,
    AssistantMessage,
    Block,
    BlockCreate,
    ContentDelta,
    EventMessage,
    Message,
    MessageCreate,
    ReasoningDelta,
    ReasoningMessage,
    Run,
    SendMessageResponse,
    StopReason,
    StreamStopReason,
    SystemMessage,
    ToolCall,
    ToolCallMessage,
    ToolReturnMessage,
    Usage,
    UserMessage,
)

__all__ = [
    "Agent",
    "ApiKey",
    "ApiKeyCreated",
    "AssistantMessage",
    "Block",
    "BlockCreate",
    "ContentDelta",
    "EventMessage",
    "File",
    "Job",
    "Message",
    "MessageCreate",
    "Organization",
    "Page",
    "Passage",
    "PassageHit",
    "PassageSearchResult",
    "ReasoningDelta",
    "ReasoningMessage",
    "Run",
    "SendMessageResponse",
    "Source",
    "StopReason",
    "StreamEvent",
    "StreamStopReason",
    "SystemMessage",
    "ToolCall",
    "ToolCallMessage",
    "ToolReturnMessage",
    "Upload",
    "Usage",
    "User",
    "UserMessage",
]

T = TypeVar("T")

# One Server-Sent Event of a streamed turn: a stored message, a token delta, the stop reason, or the usage.
StreamEvent = Annotated[
    UserMessage
    | SystemMessage
    | AssistantMessage
    | ReasoningMessage
    | ToolCallMessage
    | ToolReturnMessage
    | EventMessage
    | ContentDelta
    | ReasoningDelta
    | StreamStopReason
    | Usage,
    Field(discriminator="message_type"),
]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_page_token` as `page_token` for the next (None: the last page)."""

    items: list[T]
    next_page_token: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
