"""The typed results of the client: the REST contract's models (`mnemo.rest`, which the gateway serves), re-exported."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

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
    """One page of a listing, in the order the listing sorts.

    `next_page_token` (None on the last page) is what `page_token` takes for the next one; or let the page
    fetch them: `for item in page.auto_paging_iter()` (`Mnemo`), `async for item in page.auto_paging_aiter()`
    (`AsyncMnemo`) go through every item of every following page, one request per page.
    """

    items: list[T]
    next_page_token: str | None
    _fetch: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def bind(self, fetch: Callable[[str], Any]) -> None:
        """Sets how the next page is fetched (the client does, for every page it returns)."""
        object.__setattr__(self, "_fetch", fetch)

    @property
    def has_next_page(self) -> bool:
        """Whether another page follows."""
        return self.next_page_token is not None

    def next_page(self) -> Page[T] | None:
        """The next page (None after the last), from a blocking client."""
        if self.next_page_token is None:
            return None
        page = self._fetcher()(self.next_page_token)
        if inspect.isawaitable(page):
            page.close()  # type: ignore[attr-defined]
            raise TypeError("a page of AsyncMnemo: use `await page.anext_page()`")
        return cast("Page[T]", page)

    async def anext_page(self) -> Page[T] | None:
        """The next page (None after the last), from an asyncio client."""
        if self.next_page_token is None:
            return None
        page = self._fetcher()(self.next_page_token)
        if not inspect.isawaitable(page):
            raise TypeError("a page of Mnemo: use `page.next_page()`")
        return cast("Page[T]", await page)

    def auto_paging_iter(self) -> Iterator[T]:
        """Every item of this page and the following ones (a blocking client's page)."""
        page: Page[T] | None = self
        while page is not None:
            yield from page.items
            page = page.next_page()

    async def auto_paging_aiter(self) -> AsyncIterator[T]:
        """Every item of this page and the following ones (an asyncio client's page)."""
        page: Page[T] | None = self
        while page is not None:
            for item in page.items:
                yield item
            page = await page.anext_page()

    def _fetcher(self) -> Callable[[str], Any]:
        if self._fetch is None:
            raise TypeError("this page was not returned by a client: pass next_page_token as page_token")
        return self._fetch
