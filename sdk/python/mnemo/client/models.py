"""The typed results of the client: the REST contract's models (`mnemo.rest`, which the gateway serves), re-exported."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from mnemo.rest.agents import Agent, ContextBreakdown
from mnemo.rest.archival import Passage, PassageHit, PassageSearchResult
from mnemo.rest.blocks import Block, BlockCreate, BlockVersion
from mnemo.rest.identities import Identity
from mnemo.rest.identity import ApiKey, ApiKeyCreated, Organization, User
from mnemo.rest.messages import (
    AssistantMessage,
    ContentDelta,
    EventMessage,
    Message,
    MessageCreate,
    ReasoningDelta,
    ReasoningMessage,
    SendMessageResponse,
    StopReason,
    StreamEvent,
    StreamStopReason,
    SystemMessage,
    ToolCall,
    ToolCallMessage,
    ToolReturnMessage,
    Usage,
    UserMessage,
)
from mnemo.rest.runs import Run
from mnemo.rest.sources import File, Job, Source, Upload

__all__ = [
    "Agent",
    "ApiKey",
    "ApiKeyCreated",
    "AssistantMessage",
    "Block",
    "BlockCreate",
    "BlockVersion",
    "ContentDelta",
    "ContextBreakdown",
    "EventMessage",
    "File",
    "Identity",
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


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_page_token` as `page_token` for the next (None: the last page)."""

    items: list[T]
    next_page_token: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
