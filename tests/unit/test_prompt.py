"""The system prompt an agent sees on every step: base prompt, core memory, memory statistics."""

from __future__ import annotations

from datetime import UTC, datetime

from mnemo.memory.v1 import block_pb2
from mnemo_agent.prompt import DEFAULT_SYSTEM, compile_system_prompt

NOW = datetime(2025, 3, 14, 15, 9, tzinfo=UTC)


def compile_prompt(
    base: str = "You are Ada's assistant.",
    blocks: list[block_pb2.Block] | None = None,
    *,
    history_count: int = 0,
    in_context_count: int = 0,
) -> str:
    return compile_system_prompt(
        base, blocks or [], history_count=history_count, in_context_count=in_context_count, now=NOW
    ).text


def test_prompt_starts_with_the_agents_own_base_prompt_stripped() -> None:
    prompt = compile_prompt("  \n You are Ada's assistant.\n\n")

    assert prompt.startswith("You are Ada's assistant.\n\n")
    assert DEFAULT_SYSTEM not in prompt


def test_prompt_uses_the_default_base_prompt_when_the_agent_has_none() -> None:
    for base in ("", "   \n\t"):
        prompt = compile_prompt(base)
        assert prompt.startswith(DEFAULT_SYSTEM)
        assert "core_memory_append" in prompt


def test_prompt_shows_every_block_with_its_value_size_and_limit_in_order() -> None:
    blocks = [
        block_pb2.Block(label="persona", value="I am helpful.", limit=100, description="Who you are."),
        block_pb2.Block(label="human", value="Name: Ada\nLikes tea", limit=50),
    ]

    prompt = compile_prompt(blocks=blocks)

    persona = (
        "<persona>\n<description>Who you are.</description>\n"
        "<metadata>chars_current=13 chars_limit=100</metadata>\n"
        "<value>\nI am helpful.\n</value>\n</persona>"
    )
    human = (
        "<human>\n<metadata>chars_current=19 chars_limit=50</metadata>\n"
        "<value>\nName: Ada\nLikes tea\n</value>\n</human>"
    )
    assert f"<memory_blocks>\n{persona}\n{human}\n</memory_blocks>" in prompt


def test_prompt_marks_read_only_blocks_and_only_those() -> None:
    blocks = [
        block_pb2.Block(label="policy", value="be kind", limit=10, read_only=True),
        block_pb2.Block(label="notes", value="", limit=10),
    ]

    prompt = compile_prompt(blocks=blocks)

    assert "<metadata>chars_current=7 chars_limit=10 read_only=true</metadata>" in prompt
    assert "<metadata>chars_current=0 chars_limit=10</metadata>" in prompt
    assert prompt.count("read_only") == 1


def test_prompt_without_blocks_shows_an_empty_memory_section() -> None:
    prompt = compile_prompt(blocks=[])

    assert "<memory_blocks/>" in prompt
    assert "<memory_blocks>" not in prompt


def test_prompt_states_the_history_size_and_how_much_left_the_context_window() -> None:
    prompt = compile_prompt(history_count=120, in_context_count=20)

    assert "- messages in your history: 120 (100 no longer in your context window)" in prompt


def test_evicted_count_is_never_negative() -> None:
    prompt = compile_prompt(history_count=3, in_context_count=5)

    assert "- messages in your history: 3 (0 no longer in your context window)" in prompt


def test_prompt_states_the_current_time() -> None:
    prompt = compile_prompt()

    assert "- current time: 2025-03-14 15:09 UTC" in prompt


def test_sections_come_in_order_base_then_memory_then_metadata() -> None:
    prompt = compile_prompt(blocks=[block_pb2.Block(label="human", value="v", limit=5)])

    base_at = prompt.index("You are Ada's assistant.")
    memory_at = prompt.index("<memory_blocks>")
    metadata_at = prompt.index("<memory_metadata>")
    assert base_at < memory_at < metadata_at
    assert prompt.endswith("</memory_metadata>")


def test_agents_with_the_line_tools_see_numbered_lines_and_are_told_the_numbers_are_not_text() -> None:
    blocks = [block_pb2.Block(label="human", value="Name: Ada\nLikes tea", limit=50)]

    prompt = compile_system_prompt(
        "", blocks, history_count=0, in_context_count=0, now=NOW, memory_tool_set="lines"
    ).text

    assert "<value>\n1: Name: Ada\n2: Likes tea\n</value>" in prompt
    assert (
        'Each line of a value is shown after its number ("3: "); the numbers are not part of the text.'
        in prompt
    )
    assert "memory_insert" in prompt
    assert "core_memory_append" not in prompt
    # Classic agents see the text as it is.
    assert "<value>\nName: Ada\nLikes tea\n</value>" in compile_prompt(blocks=blocks)
