"""Resource ids: "<kind>-<uuid4>", e.g. "agent-6f1c...". Opaque to clients."""

from __future__ import annotations

import uuid

from mnemo_core.errors import FieldViolation, InvalidArgument


def new_id(kind: str) -> str:
    """A fresh id for a resource of `kind`."""
    return f"{kind}-{uuid.uuid4()}"


def require_id(value: str, field: str) -> str:
    """Returns `value`, or raises INVALID_ARGUMENT naming `field` when it is empty."""
    if not value:
        raise InvalidArgument(f"{field} is required", violations=[FieldViolation(field, "required")])
    return value
