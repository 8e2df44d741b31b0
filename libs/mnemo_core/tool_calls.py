"""A tool call's two edges, the same wherever a tool runs (the agent's memory tools, the tools service).

In: the model's arguments, parsed into a JSON object or refused with words the model can act on.
Out: the result, cut to the tool's `return_char_limit` with a marker that says so. The marker counts
toward the limit, so a result never exceeds it.
"""

from __future__ import annotations

import json
from typing import Any

MAX_ARGUMENTS_CHARS = 1_000_000
TRUNCATION_MARKER = "\n[... truncated: the tool returned {total} characters; {shown} are shown]"


class ArgumentsInvalid(ValueError):
    """The arguments of a tool call are not a JSON object; the message tells the model what to send."""


def parse_arguments(arguments_json: str) -> dict[str, Any]:
    """The arguments of a tool call as a JSON object (empty text means no arguments)."""
    if len(arguments_json) > MAX_ARGUMENTS_CHARS:
        raise ArgumentsInvalid(f"the arguments are longer than {MAX_ARGUMENTS_CHARS} characters")
    try:
        arguments = json.loads(arguments_json or "{}")
    except json.JSONDecodeError as exc:
        raise ArgumentsInvalid(f"the arguments are not valid JSON ({exc.msg}); send a JSON object") from None
    if not isinstance(arguments, dict):
        raise ArgumentsInvalid("the arguments must be a JSON object")
    return arguments


def fit_result(text: str, limit: int, total: int | None = None) -> str:
    """`text` cut to at most `limit` characters (none when `limit` <= 0), the cut marked.

    `total` is the length of the whole result when `text` is already a prefix of it (the sandbox
    sends only the start). A limit too small for the marker gets the bare cut.
    """
    total = len(text) if total is None else max(total, len(text))
    if limit <= 0 or total <= limit:
        return text
    # `shown` <= limit, so a marker built with `limit` is at least as long as the final one.
    shown = max(0, limit - len(TRUNCATION_MARKER.format(total=total, shown=limit)))
    cut = text[:shown] + TRUNCATION_MARKER.format(total=total, shown=shown)
    return cut if len(cut) <= limit else text[:limit]
