"""Resource ids: "<kind>-<uuid4>", e.g. "agent-6f1c...". Opaque to clients."""

from __future__ import annotations

import uuid

from mnemo_core.errors import FieldViolation, InvalidArgument


def new_id(kind: str) -> str:
    """A fresh id for a resource of `kind`."""
    return f"{kind}-{uuid.uuid4()}"


# Longer than any id this server makes; a bound keeps unknown ids out of error details and logs at any size.
MAX_ID_CHARS = 200


def require_id(value: str, field: str) -> str:
    """Returns `value`, or raises INVALID_ARGUMENT naming `field` when it is empty or cannot be an id
    (too long, or with whitespace or control characters)."""
    if not value:
        raise InvalidArgument(f"{field} is required", violations=[FieldViolation(field, "required")])
    if len(value) > MAX_ID_CHARS or not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidArgument(
            f"{field} is not an id",
            violations=[
                FieldViolation(
                    field, f"at most {MAX_ID_CHARS} characters, no whitespace or control characters"
                )
            ],
        )
    return value
