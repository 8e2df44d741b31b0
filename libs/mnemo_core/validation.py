"""Input checks shared by every service; each failure names the offending field."""

from __future__ import annotations

from mnemo_core.errors import FieldViolation, InvalidArgument


def invalid(field: str, description: str, message: str | None = None) -> InvalidArgument:
    """An INVALID_ARGUMENT error with one field violation."""
    return InvalidArgument(
        message or f"{field}: {description}", violations=[FieldViolation(field, description)]
    )


def check_text(value: str, field: str, *, max_chars: int, allow_empty: bool = True) -> str:
    """Returns `value` if it is storable text: not empty (unless allowed), no NUL, not too long."""
    if not value and not allow_empty:
        raise invalid(field, "must not be empty")
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters")
    if len(value) > max_chars:
        raise invalid(field, f"is {len(value)} characters long; the maximum is {max_chars}")
    return value
