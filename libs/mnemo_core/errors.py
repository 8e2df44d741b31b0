"""The domain error hierarchy. Domain code raises these; one interceptor maps them to gRPC statuses.

Each error carries a machine-readable `reason` (google.rpc.ErrorInfo.reason, UPPER_SNAKE),
optional string `metadata`, and, for bad input, field violations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

ERROR_DOMAIN = "mnemo.dev"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request: its path (e.g. `memory_blocks[1].label`) and what is wrong."""

    field: str
    description: str


class MnemoError(Exception):
    """Base of every error that crosses a service boundary."""

    default_reason: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])

    def with_violation(self, field: str, description: str) -> Self:
        """Adds a field violation and returns the error, for `raise Err(...).with_violation(...)`."""
        self.violations.append(FieldViolation(field, description))
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(MnemoError):
    """The request is malformed or violates a limit; retrying it unchanged will fail again."""

    default_reason = "INVALID_ARGUMENT"


class NotFound(MnemoError):
    """The resource does not exist (or belongs to another organization)."""

    default_reason = "NOT_FOUND"


class AlreadyExists(MnemoError):
    """A resource with the same unique key exists."""

    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(MnemoError):
    """The system is not in a state that allows the operation (e.g. no LLM provider configured)."""

    default_reason = "FAILED_PRECONDITION"


class Aborted(MnemoError):
    """A concurrent change won; the caller may retry."""

    default_reason = "ABORTED"


class PermissionDenied(MnemoError):
    """The caller is known but may not do this."""

    default_reason = "PERMISSION_DENIED"


class Unauthenticated(MnemoError):
    """The caller did not prove who it is."""

    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(MnemoError):
    """A quota or rate limit was hit; retry later."""

    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(MnemoError):
    """A dependency is down or overloaded; retry later."""

    default_reason = "UNAVAILABLE"


class DeadlineExceeded(MnemoError):
    """The operation ran out of time."""

    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(MnemoError):
    """The caller went away."""

    default_reason = "CANCELLED"


class Unimplemented(MnemoError):
    """The operation exists in the contract but this server does not provide it."""

    default_reason = "UNIMPLEMENTED"


class Internal(MnemoError):
    """A bug or broken invariant; the message is safe to show, details are in the logs."""

    default_reason = "INTERNAL"
