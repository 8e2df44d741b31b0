"""System prompt compilation: the base prompt, then core memory and memory statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mnemo.memory.v1 import block_pb2
from mnemo_agent.memory_tools import CLASSIC, LINES

_DEFAULT_SYSTEM = """\
You are a helpful assistant with a long-term memory.

Your core memory is shown below in <memory_blocks>. It is always in your context, and it is the only
thing you are sure to remember in later conversations: older messages may leave your context window.
{memory_tools}

Reply to the user in plain text. When you call a tool, wait for its result before you answer."""
_MEMORY_TOOLS = {
    CLASSIC: (
        "When you learn something worth keeping (about the person you talk to, or about yourself), save it\n"
        "at once with core_memory_append, and correct outdated facts with core_memory_replace."
    ),
    LINES: (
        "When you learn something worth keeping (about the person you talk to, or about yourself), save it\n"
        "at once with memory_insert, correct outdated facts with memory_replace, and rewrite a cluttered\n"
        'block whole with memory_rethink. Each line of a block is shown after its number ("3: "), which\n'
        "memory_insert's insert_line refers to; the numbers are not part of the text."
    ),
}
DEFAULT_SYSTEM = _DEFAULT_SYSTEM.format(memory_tools=_MEMORY_TOOLS[CLASSIC])
LINE_NUMBERS_NOTE = (
    'Each line of a value is shown after its number ("3: "); the numbers are not part of the text.'
)


def default_system(memory_tool_set: str = CLASSIC) -> str:
    """The base prompt of an agent without its own, for the tools it edits its memory with."""
    return _DEFAULT_SYSTEM.format(memory_tools=_MEMORY_TOOLS[memory_tool_set])


def _numbered(value: str) -> str:
    return (
        "\n".join(f"{number}: {line}" for number, line in enumerate(value.split("\n"), start=1))
        if value
        else ""
    )


def _render_block(block: block_pb2.Block, line_numbers: bool) -> str:
    lines = [f"<{block.label}>"]
    if block.description:
        lines.append(f"<description>{block.description}</description>")
    lines.append(
        f"<metadata>chars_current={len(block.value)} chars_limit={block.limit}"
        f"{' read_only=true' if block.read_only else ''}</metadata>"
    )
    lines += [
        "<value>",
        _numbered(block.value) if line_numbers else block.value,
        "</value>",
        f"</{block.label}>",
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SystemPrompt:
    """The system prompt in its parts: the base prompt, the memory blocks, the memory statistics."""

    base: str
    memory: str
    metadata: str

    @property
    def text(self) -> str:
        """The whole system message."""
        return "\n\n".join((self.base, self.memory, self.metadata))


def compile_system_prompt(
    base: str,
    blocks: Sequence[block_pb2.Block],
    *,
    history_count: int,
    in_context_count: int,
    now: datetime,
    archival_count: int | None = None,
    memory_tool_set: str = CLASSIC,
) -> SystemPrompt:
    """The system message an agent sees on every step (`.text`), in its parts.

    `archival_count` is shown when the memory service can tell it (None leaves the line out). Agents that
    edit memory with the line tools see their blocks' lines numbered.
    """
    line_numbers = memory_tool_set == LINES
    rendered = "\n".join(_render_block(block, line_numbers) for block in blocks)
    note = f"{LINE_NUMBERS_NOTE}\n" if line_numbers else ""
    evicted = max(0, history_count - in_context_count)
    archival = "" if archival_count is None else f"- passages in your archival memory: {archival_count}\n"
    return SystemPrompt(
        base=base.strip() or default_system(memory_tool_set),
        memory=f"<memory_blocks>\n{note}{rendered}\n</memory_blocks>" if blocks else "<memory_blocks/>",
        metadata=(
            "<memory_metadata>\n"
            f"- current time: {now.strftime('%Y-%m-%d %H:%M %Z')}\n"
            f"- messages in your history: {history_count} ({evicted} no longer in your context window)\n"
            f"{archival}"
            "</memory_metadata>"
        ),
    )
