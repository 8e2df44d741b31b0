"""Domain errors <-> gRPC statuses with google.rpc.ErrorInfo and BadRequest details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from mnemo_core import errors
from mnemo_core.quotas import RETRY_AFTER_KEY

DETAILS_KEY = "grpc-status-details-bin"

_CODES: dict[type[errors.MnemoError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}
_ERRORS: dict[grpc.StatusCode, type[errors.MnemoError]] = {code: cls for cls, code in _CODES.items()}


def status_code_of(error: errors.MnemoError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def to_trailing_metadata(error: errors.MnemoError) -> tuple[tuple[str, bytes], ...]:
    """The rich status (ErrorInfo, BadRequest) of an error, as trailing metadata."""
    code = status_code_of(error)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=errors.ERROR_DOMAIN, metadata=error.metadata
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    status.details.append(packed)
    retry_after = error.metadata.get(RETRY_AFTER_KEY, "")
    if retry_after.isdigit():
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromSeconds(int(retry_after))
        packed_retry = any_pb2.Any()
        packed_retry.Pack(retry)
        status.details.append(packed_retry)
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        packed_bad = any_pb2.Any()
        packed_bad.Pack(bad)
        status.details.append(packed_bad)
    return ((DETAILS_KEY, status.SerializeToString()),)


def from_rpc_error(error: grpc.aio.AioRpcError) -> errors.MnemoError:
    """Rebuilds the domain error a peer service raised, keeping its reason, metadata and violations."""
    code = error.code()
    cls = _ERRORS.get(code, errors.Internal if code == grpc.StatusCode.UNKNOWN else errors.Unavailable)
    message = error.details() or code.name
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[errors.FieldViolation] = []
    for key, value in error.trailing_metadata() or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
    if code == grpc.StatusCode.UNAVAILABLE and reason is None:
        reason = "SERVICE_UNAVAILABLE"
    return cls(message, reason=reason, metadata=metadata, violations=violations)


def from_status(code: int, message: str, reason: str = "") -> errors.MnemoError:
    """The domain error for a status code (google.rpc.Code value), message and ErrorInfo reason."""
    status = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    cls = _ERRORS.get(status, errors.Internal if status == grpc.StatusCode.UNKNOWN else errors.Unavailable)
    return cls(message or status.name, reason=reason or None)
