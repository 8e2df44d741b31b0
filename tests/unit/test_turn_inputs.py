"""The input messages a turn accepts: 1-100 user or system messages of storable text."""

from __future__ import annotations

import pytest

from mnemo.common.v1 import message_pb2
from mnemo_agent.turn.request import MAX_INPUT_CHARS, MAX_INPUT_MESSAGES, check_inputs
from mnemo_core.errors import InvalidArgument


def user(text: str, name: str = "") -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text, name=name))


def system(text: str) -> message_pb2.Message:
    return message_pb2.Message(system=message_pb2.SystemContent(text=text))


def fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def test_user_and_system_messages_are_accepted_as_clean_copies() -> None:
    sent = [
        message_pb2.Message(
            id="message-forged",
            agent_id="agent-x",
            run_id="run-x",
            step=7,
            user=message_pb2.UserContent(text="hi"),
        ),
        system("note"),
        user("named", name="ada"),
    ]

    inputs = check_inputs(sent)

    assert inputs == [user("hi"), system("note"), user("named", name="ada")]
    assert sent[0].id == "message-forged"  # the caller's message is not modified


def test_an_empty_list_of_messages_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_inputs([])

    assert fields(refused.value) == ["messages"]


def test_exactly_100_messages_are_accepted_and_101_are_rejected() -> None:
    assert len(check_inputs([user("x")] * MAX_INPUT_MESSAGES)) == 100
    with pytest.raises(InvalidArgument) as refused:
        check_inputs([user("x")] * (MAX_INPUT_MESSAGES + 1))

    assert MAX_INPUT_MESSAGES == 100
    assert fields(refused.value) == ["messages"]


@pytest.mark.parametrize(
    "message",
    [
        message_pb2.Message(assistant=message_pb2.AssistantContent(text="I said so")),
        message_pb2.Message(reasoning=message_pb2.ReasoningContent(text="hmm")),
        message_pb2.Message(
            tool_call=message_pb2.ToolCallContent(tool_call=message_pb2.ToolCall(id="c", name="t"))
        ),
        message_pb2.Message(tool_return=message_pb2.ToolReturnContent(tool_call_id="c", content="r")),
        message_pb2.Message(event=message_pb2.EventContent(text="e")),
        message_pb2.Message(),
    ],
    ids=["assistant", "reasoning", "tool_call", "tool_return", "event", "no-content"],
)
def test_messages_other_than_user_or_system_are_rejected_naming_their_index(
    message: message_pb2.Message,
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_inputs([user("fine"), message])

    assert fields(refused.value) == ["messages[1]"]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (user("a\x00b"), "messages[1].user.text"),
        (system("\x00"), "messages[1].system.text"),
        (user(""), "messages[1].user.text"),
        (system(""), "messages[1].system.text"),
        (user("x" * (MAX_INPUT_CHARS + 1)), "messages[1].user.text"),
    ],
    ids=["nul-user", "nul-system", "empty-user", "empty-system", "too-long"],
)
def test_text_that_cannot_be_stored_is_rejected_naming_the_field(
    message: message_pb2.Message, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_inputs([user("fine"), message])

    assert fields(refused.value) == [field]


def test_text_of_exactly_the_maximum_length_is_accepted() -> None:
    (accepted,) = check_inputs([user("x" * MAX_INPUT_CHARS)])

    assert len(accepted.user.text) == MAX_INPUT_CHARS == 1_000_000
