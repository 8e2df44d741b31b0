"""Stored history <-> chat messages for the model, and the repair pass that keeps requests valid."""

from __future__ import annotations

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_agent.conversation import from_reply, repair, to_chat_messages

SYSTEM, USER, ASSISTANT, TOOL = (
    llm_pb2.CHAT_ROLE_SYSTEM,
    llm_pb2.CHAT_ROLE_USER,
    llm_pb2.CHAT_ROLE_ASSISTANT,
    llm_pb2.CHAT_ROLE_TOOL,
)


def call(call_id: str, name: str = "core_memory_append", arguments: str = "{}") -> message_pb2.ToolCall:
    return message_pb2.ToolCall(id=call_id, name=name, arguments=arguments)


def stored(run: str, step: int, **content: object) -> message_pb2.Message:
    message = message_pb2.Message(run_id=run, step=step, **content)  # type: ignore[arg-type]
    return message


def user(text: str, run: str = "run-1", step: int = 0, name: str = "") -> message_pb2.Message:
    return stored(run, step, user=message_pb2.UserContent(text=text, name=name))


def assistant(text: str, run: str = "run-1", step: int = 0) -> message_pb2.Message:
    return stored(run, step, assistant=message_pb2.AssistantContent(text=text))


def reasoning(text: str, run: str = "run-1", step: int = 0) -> message_pb2.Message:
    return stored(run, step, reasoning=message_pb2.ReasoningContent(text=text))


def tool_call(call_id: str, run: str = "run-1", step: int = 0) -> message_pb2.Message:
    return stored(run, step, tool_call=message_pb2.ToolCallContent(tool_call=call(call_id)))


def tool_return(call_id: str, content: str = "ok", run: str = "run-1", step: int = 0) -> message_pb2.Message:
    return stored(
        run,
        step,
        tool_return=message_pb2.ToolReturnContent(
            tool_call_id=call_id, name="core_memory_append", content=content
        ),
    )


def chat(role: llm_pb2.ChatRole.ValueType, content: str = "", **fields: object) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=role, content=content, **fields)  # type: ignore[arg-type]


def roles(messages: list[llm_pb2.ChatMessage]) -> list[int]:
    return [m.role for m in messages]


# --- to_chat_messages ----------------------------------------------------------------------------------


def test_reasoning_text_and_tool_calls_of_one_step_become_one_assistant_message() -> None:
    history = [
        user("remember I like tea"),
        reasoning("the user states a preference"),
        assistant("Saving that."),
        tool_call("call_1"),
        tool_call("call_2"),
        tool_return("call_1", "saved 1"),
        tool_return("call_2", "saved 2"),
    ]

    messages = to_chat_messages(history)

    assert roles(messages) == [USER, ASSISTANT, TOOL, TOOL]
    merged = messages[1]
    assert merged.reasoning == "the user states a preference"
    assert merged.content == "Saving that."
    assert list(merged.tool_calls) == [call("call_1"), call("call_2")]
    assert [(m.tool_call_id, m.content, m.name) for m in messages[2:]] == [
        ("call_1", "saved 1", "core_memory_append"),
        ("call_2", "saved 2", "core_memory_append"),
    ]


def test_assistant_messages_of_different_steps_stay_separate() -> None:
    history = [
        user("hi"),
        tool_call("call_1", step=0),
        tool_return("call_1", step=0),
        assistant("first", step=1),
        assistant("second", run="run-2", step=1),
    ]

    messages = to_chat_messages(history)

    assert roles(messages) == [USER, ASSISTANT, TOOL, ASSISTANT, ASSISTANT]
    assert [m.content for m in messages[3:]] == ["first", "second"]


def test_several_texts_of_one_step_are_joined_by_newlines() -> None:
    history = [reasoning("a"), reasoning("b"), assistant("one"), assistant("two")]

    (merged,) = to_chat_messages(history)

    assert merged.reasoning == "a\nb"
    assert merged.content == "one\ntwo"


def test_system_user_and_event_messages_map_to_their_roles() -> None:
    history = [
        stored("r", 0, system=message_pb2.SystemContent(text="be nice")),
        user("hi", name="ada"),
        stored("r", 0, event=message_pb2.EventContent(type=message_pb2.EVENT_TYPE_SUMMARY, text="we met")),
        stored("r", 0, event=message_pb2.EventContent(type=message_pb2.EVENT_TYPE_TRUNCATION, text="cut")),
    ]

    messages = to_chat_messages(history)

    assert messages == [
        chat(SYSTEM, "be nice"),
        chat(USER, "hi", name="ada"),
        chat(USER, "[Summary of earlier conversation, which has left your context window]\nwe met"),
        chat(USER, "[System note] cut"),
    ]


def test_history_with_a_crash_between_call_and_return_is_repaired() -> None:
    history = [
        user("save this"),
        assistant("Saving.", step=0),
        tool_call("call_lost", step=0),
        user("hello?", run="run-2"),
        tool_return("call_lost", run="run-2"),
        assistant("Hi!", run="run-2", step=0),
    ]

    messages = to_chat_messages(history)

    assert messages == [
        chat(USER, "save this"),
        chat(ASSISTANT, "Saving."),
        chat(USER, "hello?"),
        chat(ASSISTANT, "Hi!"),
    ]


def test_empty_history_gives_no_messages() -> None:
    assert to_chat_messages([]) == []


# --- repair --------------------------------------------------------------------------------------------


def test_repair_keeps_a_well_formed_conversation_unchanged() -> None:
    conversation = [
        chat(SYSTEM, "s"),
        chat(USER, "u"),
        chat(ASSISTANT, "", tool_calls=[call("c1"), call("c2")]),
        chat(TOOL, "r1", tool_call_id="c1"),
        chat(TOOL, "r2", tool_call_id="c2"),
        chat(ASSISTANT, "done"),
    ]

    assert repair(conversation) == conversation


def test_repair_drops_an_unanswered_tool_call_but_keeps_the_assistants_text() -> None:
    repaired = repair([chat(USER, "u"), chat(ASSISTANT, "Let me save that.", tool_calls=[call("c1")])])

    assert repaired == [chat(USER, "u"), chat(ASSISTANT, "Let me save that.")]


def test_repair_drops_an_assistant_message_left_with_neither_calls_nor_text() -> None:
    repaired = repair(
        [chat(USER, "u"), chat(ASSISTANT, "", reasoning="thinking", tool_calls=[call("c1")]), chat(USER, "?")]
    )

    assert repaired == [chat(USER, "u"), chat(USER, "?")]


def test_repair_keeps_only_the_answered_calls_of_a_partly_answered_message() -> None:
    repaired = repair(
        [
            chat(ASSISTANT, "", tool_calls=[call("c1"), call("c2"), call("c3")]),
            chat(TOOL, "r2", tool_call_id="c2"),
        ]
    )

    assert repaired == [
        chat(ASSISTANT, "", tool_calls=[call("c2")]),
        chat(TOOL, "r2", tool_call_id="c2"),
    ]


def test_repair_drops_orphan_tool_returns() -> None:
    repaired = repair(
        [
            chat(TOOL, "orphan at start", tool_call_id="c0"),
            chat(USER, "u"),
            chat(TOOL, "orphan after user", tool_call_id="c1"),
            chat(ASSISTANT, "plain answer"),
            chat(TOOL, "orphan after plain answer", tool_call_id="c2"),
        ]
    )

    assert repaired == [chat(USER, "u"), chat(ASSISTANT, "plain answer")]


def test_repair_drops_returns_for_calls_the_message_did_not_make_and_duplicate_returns() -> None:
    repaired = repair(
        [
            chat(ASSISTANT, "", tool_calls=[call("c1")]),
            chat(TOOL, "other", tool_call_id="c9"),
            chat(TOOL, "first", tool_call_id="c1"),
            chat(TOOL, "again", tool_call_id="c1"),
        ]
    )

    assert repaired == [chat(ASSISTANT, "", tool_calls=[call("c1")]), chat(TOOL, "first", tool_call_id="c1")]


def test_repair_does_not_modify_its_input() -> None:
    original = [chat(ASSISTANT, "text", tool_calls=[call("c1")])]
    snapshot = [llm_pb2.ChatMessage.FromString(m.SerializeToString()) for m in original]

    repair(original)

    assert original == snapshot


# --- from_reply ----------------------------------------------------------------------------------------


def test_reply_is_stored_as_reasoning_then_text_then_each_tool_call() -> None:
    reply = chat(ASSISTANT, "Saving.", reasoning="hmm", tool_calls=[call("c1"), call("c2")])

    stored_messages = from_reply(reply)

    assert [m.WhichOneof("content") for m in stored_messages] == [
        "reasoning",
        "assistant",
        "tool_call",
        "tool_call",
    ]
    assert stored_messages[0].reasoning.text == "hmm"
    assert stored_messages[1].assistant.text == "Saving."
    assert [m.tool_call.tool_call for m in stored_messages[2:]] == [call("c1"), call("c2")]


def test_reply_with_only_tool_calls_stores_no_empty_text() -> None:
    stored_messages = from_reply(chat(ASSISTANT, "", tool_calls=[call("c1")]))

    assert [m.WhichOneof("content") for m in stored_messages] == ["tool_call"]


def test_empty_reply_is_stored_as_one_empty_assistant_message() -> None:
    stored_messages = from_reply(chat(ASSISTANT, ""))

    assert [m.WhichOneof("content") for m in stored_messages] == ["assistant"]
    assert stored_messages[0].assistant.text == ""


def test_a_stored_reply_reads_back_as_the_same_assistant_message() -> None:
    reply = chat(ASSISTANT, "Saving.", reasoning="hmm", tool_calls=[call("c1")])
    history = [user("u")]
    for message in from_reply(reply):
        message.run_id, message.step = "run-1", 0
        history.append(message)
    history.append(tool_return("c1"))

    messages = to_chat_messages(history)

    assert messages[1] == reply
