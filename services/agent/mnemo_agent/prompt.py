"""System prompt compilation: the base prompt, then core memory and memory statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mnemo.memory.v1 import block_pb2

DEFAULT_SYSTEM = """\
You are a helpful assistant with a long-term memory.

Your core memory is shown below in <memory_blocks>. It is always in your context, and it is the only
thing you are sure to remember in later conversations: older messages may leave your context window.
When you learn something worth keeping (about the person you talk to, or about yourself), save it
at once with core_memory_append, and correct outdated facts with core_memory_replace.

Reply to the user in plain text. When you call a tool, wait for its result before you answer."""


def _render_block(block: block_pb2.Block) -> str:
    lines = [f"<{block.label}>"]
    if block.description:
        lines.append(f"<description>{block.description}</description>")
    lines.append(
        f"<metadata>chars_current={len(block.value)} chars_limit={block.limit}"
        f"{' read_only=true' if block.read_only else ''}</metadata>"
    )
    lines += ["<value>", block.value, "</value>", f"</{block.label}>"]
    return "\n".join(lines)


def compile_system_prompt(
    base: str,
    blocks: Sequence[block_pb2.Block],
    *,
    history_count: int,
    in_context_count: int,
    now: datetime,
    archival_count: int | None = None,
) -> str:
    """The system message an agent sees on every step.

    `archival_count` is shown when the memory service can tell it (None leaves the line out).
    """
    sections = [base.strip() or DEFAULT_SYSTEM]
    rendered = "\n".join(_render_block(block) for block in blocks)
    sections.append(f"<memory_blocks>\n{rendered}\n</memory_blocks>" if blocks else "<memory_blocks/>")
    evicted = max(0, history_count - in_context_count)
    archival = "" if archival_count is None else f"- passages in your archival memory: {archival_count}\n"
    sections.append(
        "<memory_metadata>\n"
        f"- current time: {now.strftime('%Y-%m-%d %H:%M %Z')}\n"
        f"- messages in your history: {history_count} ({evicted} no longer in your context window)\n"
        f"{archival}"
        "</memory_metadata>"
    )
    return "\n\n".join(sections)
