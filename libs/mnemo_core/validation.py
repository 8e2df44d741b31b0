"""Input checks shared by every service; each failure names the offending field."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from mnemo_core.errors import FieldViolation, InvalidArgument

MessageT = TypeVar("MessageT")


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


def masked_changes(
    paths: Iterable[str], message: MessageT, fields: Mapping[str, Callable[[MessageT], Any]]
) -> dict[str, Any]:
    """The field values an update names in its mask (AIP-134), read from `message` by `fields`.

    INVALID_ARGUMENT (field `update_mask`) for an empty mask or a path that cannot be updated.
    """
    wanted = list(paths)
    if not wanted:
        raise invalid("update_mask", "name at least one field to update")
    unknown = [path for path in wanted if path not in fields]
    if unknown:
        raise invalid("update_mask", f"cannot update {', '.join(unknown)}")
    return {path: fields[path](message) for path in wanted}
