"""Page sizes and opaque page tokens (AIP-158).

A token names the listing it belongs to, so a token of one listing is refused by another, and
every value read from it is type-checked: a tampered token is INVALID_ARGUMENT, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
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


def _foreign_token() -> InvalidArgument:
    return InvalidArgument(
        "page_token is not a token this server issued for this listing",
        violations=[FieldViolation("page_token", "malformed")],
    )


class PagePosition:
    """Where a listing stopped, as read back from its token."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def text(self, key: str) -> str:
        value = self._values.get(key)
        if not isinstance(value, str):
            raise _foreign_token()
        return value

    def integer(self, key: str) -> int:
        value = self._values.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _foreign_token()
        return value

    def time(self, key: str) -> datetime:
        try:
            return datetime.fromisoformat(self.text(key))
        except ValueError:
            raise _foreign_token() from None


def encode_token(listing: str, **position: str | int) -> str:
    """An opaque token for the position after the last returned item of `listing`."""
    payload = json.dumps({"l": listing, **position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_token(token: str, listing: str) -> PagePosition | None:
    """The position a token of `listing` stands for; None for an empty token."""
    if not token:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise _foreign_token() from exc
    if not isinstance(values, dict) or values.get("l") != listing:
        raise _foreign_token()
    return PagePosition(values)
