"""Page sizes and opaque page tokens (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mnemo_core.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The effective page size: 0 means the default; larger than the maximum is capped."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative", violations=[FieldViolation("page_size", "must be >= 0")]
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(position: dict[str, Any]) -> str:
    """An opaque token for the position after the last returned item."""
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any] | None:
    """The position a token stands for; None for an empty token; INVALID_ARGUMENT for garbage."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            "page_token is not a token this server issued",
            violations=[FieldViolation("page_token", "malformed")],
        ) from exc
    if not isinstance(position, dict):
        raise InvalidArgument("page_token is not a token this server issued")
    return position
