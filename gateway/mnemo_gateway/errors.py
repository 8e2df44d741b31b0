"""Domain errors (as raised by the mesh) -> HTTP responses, one mapping for every route."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mnemo_core import errors
from mnemo_core.quotas import RETRY_AFTER_KEY

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[errors.MnemoError], int] = {
    errors.InvalidArgument: 422,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Aborted: 409,
    errors.FailedPrecondition: 400,
    errors.PermissionDenied: 403,
    errors.Unauthenticated: 401,
    errors.ResourceExhausted: 429,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
    errors.Cancelled: 499,
    errors.Unimplemented: 501,
    errors.Internal: 500,
}
# Reasons whose HTTP status differs from their gRPC code's usual one.
HTTP_STATUS_BY_REASON = {"LLM_PROVIDER_NOT_CONFIGURED": 503}
# Seconds a client should wait after a 503 that names no wait: about what a restarted service needs.
DEFAULT_RETRY_AFTER = 1
# 503s that retrying does not cure: configuration, not a passing outage.
NOT_RETRYABLE_REASONS = frozenset({"LLM_PROVIDER_NOT_CONFIGURED"})
# Other errors that the same request sent again later cures: the idempotency key's earlier run is still going
# (a retry after a lost connection or a restarted replica meets it), and then gives its result.
RETRYABLE_REASONS = frozenset({"RUN_IN_PROGRESS"})


def http_status(error: errors.MnemoError) -> int:
    """The HTTP status for a domain error."""
    if error.reason in HTTP_STATUS_BY_REASON:
        return HTTP_STATUS_BY_REASON[error.reason]
    for cls in type(error).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500


def retry_after(error: errors.MnemoError, status: int) -> str | None:
    """The Retry-After header (whole seconds) of an error worth retrying (a 429, a 503, a key's run still
    going); None otherwise."""
    if error.reason in NOT_RETRYABLE_REASONS:
        return None
    if status not in (429, 503) and error.reason not in RETRYABLE_REASONS:
        return None
    try:
        asked = float(error.metadata.get(RETRY_AFTER_KEY, ""))
    except ValueError:
        asked = 0.0 if status == 429 else DEFAULT_RETRY_AFTER
    return str(max(1, math.ceil(asked)))


def error_body(error: errors.MnemoError) -> dict[str, object]:
    """The JSON body of an error response."""
    body: dict[str, object] = {"detail": error.message, "reason": error.reason}
    if error.metadata:
        body["metadata"] = error.metadata
    if error.violations:
        body["violations"] = [{"field": v.field, "description": v.description} for v in error.violations]
    return body


def install(app: FastAPI) -> None:
    """Registers the error handlers on the app."""

    @app.exception_handler(errors.MnemoError)
    async def _mnemo_error(request: Request, exc: errors.MnemoError) -> JSONResponse:
        status = http_status(exc)
        if status >= 500:
            log.warning(
                "%s %s -> %d %s: %s", request.method, request.url.path, status, exc.reason, exc.message
            )
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        wait = retry_after(exc, status)
        if wait is not None:
            headers["Retry-After"] = wait
        return JSONResponse(error_body(exc), status_code=status, headers=headers)
