"""Domain errors (as raised by the mesh) -> HTTP responses, one mapping for every route."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mnemo_core import errors
from mnemo_gateway.limits import retry_after_header

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


def http_status(error: errors.MnemoError) -> int:
    """The HTTP status for a domain error."""
    if error.reason in HTTP_STATUS_BY_REASON:
        return HTTP_STATUS_BY_REASON[error.reason]
    for cls in type(error).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500


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
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, errors.ResourceExhausted):
            headers = retry_after_header(exc)
        return JSONResponse(error_body(exc), status_code=status, headers=headers)
