"""The Python client of mnemo's REST API: `Mnemo` (blocking) and `AsyncMnemo` (asyncio)."""

from mnemo.client.clients import AsyncMnemo, Mnemo
from mnemo.client.errors import (
    Conflict,
    InvalidInput,
    MnemoError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
    Violation,
)
from mnemo.client.models import Page, StreamEvent
from mnemo.client.transport import AsyncEventStream, EventStream

__all__ = [
    "AsyncEventStream",
    "AsyncMnemo",
    "Conflict",
    "EventStream",
    "InvalidInput",
    "Mnemo",
    "MnemoError",
    "NotFound",
    "Page",
    "PermissionDenied",
    "PreconditionFailed",
    "RateLimited",
    "ServerError",
    "StreamEvent",
    "Unauthenticated",
    "Unavailable",
    "Violation",
]
