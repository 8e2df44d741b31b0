"""The offline model's plumbing without llama.cpp: request mapping and tool calls read out of its text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core.errors import InvalidArgument
from mnemo_llm.local_model import (
    chat_messages,
    chat_tools,
    may_be_tool_call,
    parse_tool_calls,
)

TOOLS = ["get_weather", "core_memory_append"]


def calls_of(text: str) -> list[tuple[str, dict[str, object]]]:
    _, calls = parse_tool_calls(text, TOOLS)
    return [(c.name, json.loads(c.arguments)) for c in calls]


def test_a_reply_that_is_one_json_call_becomes_a_tool_call_with_no_text() -> None:
    text, calls = parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Berlin"}}', TOOLS)

    assert text == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Berlin"})]
    assert calls[0].id.startswith("call_")


def test_tagged_calls_are_found_among_text_and_the_text_is_kept() -> None:
    reply = (
        "Let me check both.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Berlin"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    )

    text, calls = parse_tool_calls(reply, TOOLS)

    assert text == "Let me check both."
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Berlin", "Paris"]
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "get_weather", "arguments": {"city": "Rome"}}\n{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        '[{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]',
        '```json\n[{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]\n```',
    ],
    ids=["one-per-line", "list", "fenced"],
)
def test_several_calls_as_lines_a_list_or_a_fenced_block(reply: str) -> None:
    assert calls_of(reply) == [("get_weather", {"city": "Rome"}), ("get_weather", {"city": "Oslo"})]


def test_arguments_given_as_json_text_or_as_parameters_or_in_a_function_wrapper_are_accepted() -> None:
    assert calls_of('{"name": "get_weather", "arguments": "{\\"city\\": \\"Lima\\"}"}') == [
        ("get_weather", {"city": "Lima"})
    ]
    assert calls_of('{"name": "get_weather", "parameters": {"city": "Lima"}}') == [
        ("get_weather", {"city": "Lima"})
    ]
    assert calls_of('{"function": {"name": "get_weather", "arguments": {"city": "Lima"}}}') == [
        ("get_weather", {"city": "Lima"})
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "The weather in Berlin is sunny.",
        '{"name": "launch_rockets", "arguments": {}}',
        '{"city": "Berlin"}',
        '{"name": "get_weather", "arguments": {"city": "Berlin"}} and some chatter',
        '{"name": "get_weather", "arguments": ',
        '{"name": "get_weather", "arguments": [1, 2]}',
        "",
    ],
    ids=["prose", "unknown-tool", "no-name", "json-then-text", "truncated", "arguments-not-object", "empty"],
)
def test_text_that_is_not_a_call_of_an_offered_tool_stays_text(reply: str) -> None:
    text, calls = parse_tool_calls(reply, TOOLS)

    assert calls == []
    assert text == reply


def test_without_offered_tools_nothing_is_parsed() -> None:
    reply = '{"name": "get_weather", "arguments": {}}'

    assert parse_tool_calls(reply, []) == (reply, [])


@pytest.mark.parametrize(
    ("prefix", "held"),
    [
        ("", True),
        ("  ", True),
        ("{", True),
        ('{"na', True),
        ("[", True),
        ("```", True),
        ("<tool", True),
        ("<tool_call>{", True),
        ("Sure", False),
        ("<b>", False),
        ("The", False),
    ],
)
def test_text_is_held_back_only_while_it_may_still_become_a_tool_call(prefix: str, held: bool) -> None:
    assert may_be_tool_call(prefix) is held


def test_messages_keep_roles_and_tool_calls_carry_object_arguments_for_the_chat_template() -> None:
    request = llm_pb2.ChatRequest(
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="sys"),
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="weather?"),
            llm_pb2.ChatMessage(
                role=llm_pb2.CHAT_ROLE_ASSISTANT,
                tool_calls=[message_pb2.ToolCall(id="c1", name="get_weather", arguments='{"city": "Oslo"}')],
            ),
            llm_pb2.ChatMessage(
                role=llm_pb2.CHAT_ROLE_TOOL, content="-3C", tool_call_id="c1", name="get_weather"
            ),
        ]
    )

    assert chat_messages(request) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
        {"role": "tool", "content": "-3C", "tool_call_id": "c1", "name": "get_weather"},
    ]


def test_a_message_without_a_role_is_invalid_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as no_role:
        chat_messages(llm_pb2.ChatRequest(messages=[llm_pb2.ChatMessage(content="?")]))

    assert [v.field for v in no_role.value.violations] == ["messages[0].role"]


def test_arguments_in_history_that_are_not_a_json_object_are_sent_wrapped() -> None:
    calls = [
        message_pb2.ToolCall(id="a", name="t", arguments="{not json"),
        message_pb2.ToolCall(id="b", name="t", arguments="[1, 2]"),
        message_pb2.ToolCall(id="c", name="t", arguments=""),
    ]
    (wire,) = chat_messages(
        llm_pb2.ChatRequest(
            messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_ASSISTANT, tool_calls=calls)]
        )
    )

    assert [c["function"]["arguments"] for c in wire["tool_calls"]] == [
        {"_raw_arguments": "{not json"},
        {"_value": [1, 2]},
        {},
    ]


def test_tools_are_offered_in_function_form_unless_tool_choice_is_none() -> None:
    tool = llm_pb2.ToolSchema(name="get_weather", description="d", parameters_json='{"type": "object"}')

    offered = chat_tools(llm_pb2.ChatRequest(tools=[tool]))
    withheld = chat_tools(llm_pb2.ChatRequest(tools=[tool], tool_choice=llm_pb2.TOOL_CHOICE_NONE))

    assert offered == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}},
        }
    ]
    assert withheld == []


def test_the_bundled_model_is_refused_clearly_when_its_weights_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnemo_core.errors import FailedPrecondition
    from mnemo_llm import local_model

    monkeypatch.setattr(local_model, "_PARTS", ["no_such_weights_part1"])

    with pytest.raises(FailedPrecondition) as refused:
        local_model.bundled_model_path(tmp_path)

    assert refused.value.reason == "LOCAL_MODEL_UNAVAILABLE"
    assert "uv sync --extra local" in refused.value.message
    assert list(tmp_path.iterdir()) == []
