"""Edits of a block's value by line: the text of memory_insert and memory_replace, with errors a model can act on.

Lines are numbered from 1, as the system prompt shows them to agents that use these tools. The functions
return the new value; the caller checks the limit and stores it.
"""

from __future__ import annotations

from mnemo_core.errors import InvalidArgument

# Line numbers named in an error, at most.
MAX_LISTED_LINES = 20


def line_count(value: str) -> int:
    """Lines of a value ("" has none)."""
    return value.count("\n") + 1 if value else 0


def insert_lines(label: str, value: str, text: str, after_line: int | None) -> str:
    """`value` with `text` inserted after line `after_line` (0: first; None: after the last line)."""
    lines = value.split("\n") if value else []
    position = len(lines) if after_line is None else after_line
    if not 0 <= position <= len(lines):
        raise InvalidArgument(
            f"block '{label}' has {len(lines)} line{'s' if len(lines) != 1 else ''}; after_line must be "
            f"between 0 (insert first) and {len(lines)} (insert last), or left out to append",
            reason="BLOCK_LINE_OUT_OF_RANGE",
            metadata={"label": label, "after_line": str(after_line), "line_count": str(len(lines))},
        ).with_violation("after_line", f"must be between 0 and {len(lines)}")
    return "\n".join([*lines[:position], *text.split("\n"), *lines[position:]])


def match_lines(value: str, old: str) -> list[int]:
    """The line (from 1) where each non-overlapping occurrence of `old` starts."""
    lines, start = [], 0
    while (found := value.find(old, start)) >= 0:
        lines.append(value.count("\n", 0, found) + 1)
        start = found + len(old)
    return lines


def replace_once(label: str, value: str, old: str, new: str) -> str:
    """`value` with its one occurrence of `old` replaced by `new`; refuses none or several."""
    lines = match_lines(value, old)
    if not lines:
        raise InvalidArgument(
            f"the text to replace was not found in block '{label}'; it must match the block's text exactly "
            "(spaces and line breaks included)",
            reason="BLOCK_CONTENT_NOT_FOUND",
            metadata={"label": label},
        ).with_violation("old_content", "not found in the block")
    if len(lines) > 1:
        listed = ", ".join(str(line) for line in lines[:MAX_LISTED_LINES])
        more = f" and {len(lines) - MAX_LISTED_LINES} more" if len(lines) > MAX_LISTED_LINES else ""
        raise InvalidArgument(
            f"the text to replace occurs {len(lines)} times in block '{label}' (starting on lines "
            f"{listed}{more}); include more of the surrounding text so that it matches exactly once",
            reason="BLOCK_CONTENT_AMBIGUOUS",
            metadata={"label": label, "lines": ",".join(str(line) for line in lines)},
        ).with_violation("old_content", f"occurs {len(lines)} times")
    return value.replace(old, new, 1)
