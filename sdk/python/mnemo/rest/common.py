"""Shapes every resource shares: the request body base, the error body, health, search scores."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# The largest integer the gRPC messages behind these bodies carry (int32 fields).
MAX_INT32 = 2**31 - 1


class RequestBody(BaseModel):
    """The base of every request body: unknown fields are refused (422)."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str
    reason: str
    metadata: dict[str, str] | None = None
    violations: list[dict[str, str]] | None = None
    # On a stream's error event: the failure is passing (a service restarting, a rate limit); send the
    # same request again, with the same idempotency key, after this many seconds.
    retry_after: int | None = None


class Health(BaseModel):
    """Health of the gateway and every service behind it."""

    status: Literal["ok", "degraded"]
    services: dict[str, str]


class Score(BaseModel):
    """How a search hit ranked."""

    score: float
    vector_rank: int | None
    similarity: float | None
    keyword_rank: int | None
