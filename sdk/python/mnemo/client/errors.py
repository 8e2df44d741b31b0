"""Errors of the REST API as exceptions: one class per HTTP status the gateway answers with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from mnemo.rest.retry_after import retry_after_seconds


@dataclass(frozen=True)
class Violation:
    """One invalid field of a request."""

    field: str
    description: str


class MnemoError(Exception):
    """An error answer of the API: its HTTP status (None inside a stream), stable `reason` and `detail`."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        violations: list[Violation] | None = None,
    ) -> None:
        super().__init__(f"{status or ''} {reason}: {detail}".strip())
        self.detail = detail
        self.status = status
        self.reason = reason
        self.metadata = metadata or {}
        self.violations = violations or []


class PreconditionFailed(MnemoError):
    """400/412: the request cannot run in the resource's current state (FAILED_PRECONDITION)."""


class Unauthenticated(MnemoError):
    """401: no API key, or a wrong one."""


class PermissionDenied(MnemoError):
    """403: the key may not do this."""


class NotFound(MnemoError):
    """404: no such resource (in the caller's organization)."""


class Conflict(MnemoError):
    """409: it exists already, or a concurrent change won."""


class InvalidInput(MnemoError):
    """422: the request is invalid; `violations` names the fields when known."""


class RateLimited(MnemoError):
    """429: too many requests; `retry_after` is the wait the server asked for, in seconds."""

    retry_after: float | None = None


class Unavailable(MnemoError):
    """503: a service (or the model provider) is unavailable for now."""

    retry_after: float | None = None


class ServerError(MnemoError):
    """Any other 5xx (500 internal, 501 unimplemented, 504 deadline exceeded)."""


ERRORS_BY_STATUS: dict[int, type[MnemoError]] = {
    400: PreconditionFailed,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    422: InvalidInput,
    429: RateLimited,
    503: Unavailable,
}


def error_from_body(body: Any, *, status: int | None, fallback: str = "") -> MnemoError:
    """The exception for an error body `{"detail", "reason", "metadata"?, "violations"?}`.

    FastAPI's own request validation answers `{"detail": [{"loc", "msg", ...}]}`: its items become violations.
    """
    cls = ERRORS_BY_STATUS.get(status or 0, ServerError if (status or 0) >= 500 else MnemoError)
    if not isinstance(body, dict):
        return cls(fallback or "error", status=status)
    detail = body.get("detail", fallback)
    violations = [
        Violation(str(v.get("field", "")), str(v.get("description", "")))
        for v in body.get("violations") or []
        if isinstance(v, dict)
    ]
    if isinstance(detail, list):
        violations += [
            Violation(".".join(str(p) for p in item.get("loc", [])), str(item.get("msg", "")))
            for item in detail
            if isinstance(item, dict)
        ]
        detail = "; ".join(f"{v.field}: {v.description}" for v in violations) or "invalid request"
    metadata = body.get("metadata")
    return cls(
        str(detail),
        status=status,
        reason=str(body.get("reason") or ""),
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else None,
        violations=violations,
    )


def error_from_response(response: httpx.Response) -> MnemoError:
    """The exception for an (already read) error response."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = error_from_body(body, status=response.status_code, fallback=response.text[:500])
    if isinstance(error, RateLimited | Unavailable):
        error.retry_after = retry_after_seconds(response.headers)
    return error
