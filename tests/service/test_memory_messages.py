"""MessageService over real gRPC on a real SQLite file: append-only, idempotent, paged histories."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import Internal, InvalidArgument, MnemoError, NotFound, Unauthenticated
from mnemo_core.paging import encode_token
from tests.service.conftest import new_actor, new_agent_id

if TYPE_CHECKING:
    from mnemo.memory.v1.message_pb2_grpc import MessageServiceAsyncStub as Messages


def user(text: str) -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text))


def assistant(text: str) -> message_pb2.Message:
    return message_pb2.Message(assistant=message_pb2.AssistantContent(text=text))


def texts(messages: list[message_pb2.Message]) -> list[str]:
    result = []
    for message in messages:
        kind = message.WhichOneof("content")
        assert kind in ("user", "assistant")
        result.append(message.user.text if kind == "user" else message.assistant.text)
    return result


async def append(
    messages: Messages, agent_id: str, run_id: str, step: int, *batch: message_pb2.Message
) -> list[message_pb2.Message]:
    response = await messages.AppendMessages(
        history_pb2.AppendMessagesRequest(agent_id=agent_id, run_id=run_id, step=step, messages=list(batch))
    )
    return list(response.messages)


async def list_page(messages: Messages, agent_id: str, **options: object) -> history_pb2.ListMessagesResponse:
    return await messages.ListMessages(history_pb2.ListMessagesRequest(agent_id=agent_id, **options))  # type: ignore[arg-type]


async def five_messages(messages: Messages, agent_id: str) -> list[message_pb2.Message]:
    """m1..m5, one per step of run-1."""
    stored: list[message_pb2.Message] = []
    for step in range(5):
        stored += await append(messages, agent_id, "run-1", step, user(f"m{step + 1}"))
    return stored


def violation_fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


# --- append --------------------------------------------------------------------------------------------


async def test_append_messages_assigns_ids_agent_run_step_and_time_in_request_order(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    tool_call = message_pb2.Message(
        tool_call=message_pb2.ToolCallContent(
            tool_call=message_pb2.ToolCall(id="call_1", name="core_memory_append", arguments="{}")
        )
    )
    tool_return = message_pb2.Message(
        tool_return=message_pb2.ToolReturnContent(
            tool_call_id="call_1",
            name="core_memory_append",
            content="ok",
            status=message_pb2.TOOL_RETURN_STATUS_SUCCESS,
        )
    )
    with acting_as(actor):
        stored = await append(
            messages, agent_id, "run-1", 3, user("hi"), tool_call, tool_return, assistant("hello")
        )

    assert [m.WhichOneof("content") for m in stored] == ["user", "tool_call", "tool_return", "assistant"]
    assert all(m.id.startswith("message-") for m in stored)
    assert len({m.id for m in stored}) == 4
    assert {(m.agent_id, m.run_id, m.step) for m in stored} == {(agent_id, "run-1", 3)}
    assert all(m.create_time.seconds > 0 for m in stored)
    assert stored[1].tool_call.tool_call == tool_call.tool_call.tool_call
    assert stored[2].tool_return == tool_return.tool_return


async def test_append_messages_ignores_ids_and_placement_sent_by_the_client(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    forged = message_pb2.Message(
        id="message-mine",
        agent_id="agent-other",
        run_id="run-other",
        step=99,
        user=message_pb2.UserContent(text="x"),
    )
    with acting_as(actor):
        (stored,) = await append(messages, agent_id, "run-1", 0, forged)

    assert stored.id != "message-mine"
    assert (stored.agent_id, stored.run_id, stored.step) == (agent_id, "run-1", 0)


async def test_append_messages_retry_of_the_same_step_returns_the_stored_messages_without_duplicates(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        first = await append(messages, agent_id, "run-1", 0, user("hi"), assistant("hello"))
        retry = await append(messages, agent_id, "run-1", 0, user("hi"), assistant("hello"))
        different_payload = await append(messages, agent_id, "run-1", 0, user("something else"))
        history = (await list_page(messages, agent_id)).messages
        window = await messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent_id))

    assert retry == first
    assert different_payload == first
    assert [m.id for m in history] == [m.id for m in first]
    assert window.history_count == 2


async def test_append_messages_batches_are_keyed_by_run_and_step(messages: Messages, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        a = await append(messages, agent_id, "run-1", 0, user("a"))
        b = await append(messages, agent_id, "run-1", 1, assistant("b"))
        c = await append(messages, agent_id, "run-2", 0, user("c"))
        history = (await list_page(messages, agent_id)).messages

    assert len({a[0].id, b[0].id, c[0].id}) == 3
    assert texts(list(history)) == ["a", "b", "c"]


async def test_append_messages_with_an_invalid_message_stores_none_of_the_batch(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        with pytest.raises(InvalidArgument) as refused:
            await append(messages, agent_id, "run-1", 0, user("fine"), message_pb2.Message())
        assert list((await list_page(messages, agent_id)).messages) == []
        # The step was not consumed by the refusal: a valid retry stores it.
        stored = await append(messages, agent_id, "run-1", 0, user("fine"))

    assert violation_fields(refused.value) == ["messages[1]"]
    assert texts(stored) == ["fine"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (message_pb2.Message(user=message_pb2.UserContent(text="a\x00b")), "messages[0].user.text"),
        (message_pb2.Message(user=message_pb2.UserContent(text="x", name="n\x00")), "messages[0].user.name"),
        (
            message_pb2.Message(
                tool_call=message_pb2.ToolCallContent(
                    tool_call=message_pb2.ToolCall(id="c", name="t", arguments="{\x00}")
                )
            ),
            "messages[0].tool_call.tool_call.arguments",
        ),
        (
            message_pb2.Message(tool_return=message_pb2.ToolReturnContent(tool_call_id="c", content="\x00")),
            "messages[0].tool_return.content",
        ),
    ],
    ids=["user-text", "user-name", "tool-call-arguments", "tool-return-content"],
)
async def test_append_messages_with_a_nul_character_is_rejected_naming_the_field(
    messages: Messages, actor: Actor, bad: message_pb2.Message, field: str
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        with pytest.raises(InvalidArgument) as refused:
            await append(messages, agent_id, "run-1", 0, bad)
        assert list((await list_page(messages, agent_id)).messages) == []

    assert violation_fields(refused.value) == [field]


async def test_append_messages_with_an_empty_batch_is_invalid_argument(
    messages: Messages, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await append(messages, new_agent_id(), "run-1", 0)

    assert violation_fields(refused.value) == ["messages"]


async def test_append_messages_with_more_than_1000_messages_is_invalid_argument(
    messages: Messages, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await append(messages, new_agent_id(), "run-1", 0, *[user("x")] * 1001)

    assert violation_fields(refused.value) == ["messages"]


@pytest.mark.parametrize(
    ("agent_id", "run_id", "step", "field"),
    [("", "run-1", 0, "agent_id"), ("agent-x", "", 0, "run_id"), ("agent-x", "run-1", -1, "step")],
)
async def test_append_messages_without_agent_or_run_or_with_negative_step_is_invalid_argument(
    messages: Messages, actor: Actor, agent_id: str, run_id: str, step: int, field: str
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await append(messages, agent_id, run_id, step, user("x"))

    assert violation_fields(refused.value) == [field]


async def test_append_messages_without_actor_is_unauthenticated(messages: Messages) -> None:
    with pytest.raises(Unauthenticated):
        await append(messages, new_agent_id(), "run-1", 0, user("x"))


# --- list ----------------------------------------------------------------------------------------------


async def test_list_messages_pages_oldest_first_with_page_tokens(messages: Messages, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        stored = await five_messages(messages, agent_id)
        first = await list_page(messages, agent_id, page_size=2)
        second = await list_page(messages, agent_id, page_size=2, page_token=first.next_page_token)
        third = await list_page(messages, agent_id, page_size=2, page_token=second.next_page_token)

    assert texts(list(first.messages)) == ["m1", "m2"]
    assert texts(list(second.messages)) == ["m3", "m4"]
    assert texts(list(third.messages)) == ["m5"]
    assert first.next_page_token
    assert second.next_page_token
    assert third.next_page_token == ""
    assert [m.id for m in [*first.messages, *second.messages, *third.messages]] == [m.id for m in stored]


async def test_list_messages_page_that_ends_exactly_at_the_last_message_has_no_next_token(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await five_messages(messages, agent_id)
        page = await list_page(messages, agent_id, page_size=5)

    assert len(page.messages) == 5
    assert page.next_page_token == ""


async def test_list_messages_in_descending_order_pages_newest_first(messages: Messages, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await five_messages(messages, agent_id)
        descending = history_pb2.LIST_ORDER_DESCENDING
        first = await list_page(messages, agent_id, order=descending, page_size=3)
        second = await list_page(
            messages, agent_id, order=descending, page_size=3, page_token=first.next_page_token
        )
        ascending = await list_page(messages, agent_id, order=history_pb2.LIST_ORDER_ASCENDING)

    assert texts(list(first.messages)) == ["m5", "m4", "m3"]
    assert texts(list(second.messages)) == ["m2", "m1"]
    assert second.next_page_token == ""
    assert texts(list(ascending.messages)) == ["m1", "m2", "m3", "m4", "m5"]


async def test_list_messages_before_and_after_a_message_exclude_it(messages: Messages, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        m = await five_messages(messages, agent_id)
        after = await list_page(messages, agent_id, after=m[1].id)
        before = await list_page(messages, agent_id, before=m[3].id)
        between = await list_page(messages, agent_id, after=m[0].id, before=m[4].id)
        newest_before = await list_page(
            messages, agent_id, before=m[3].id, order=history_pb2.LIST_ORDER_DESCENDING, page_size=2
        )

    assert texts(list(after.messages)) == ["m3", "m4", "m5"]
    assert texts(list(before.messages)) == ["m1", "m2", "m3"]
    assert texts(list(between.messages)) == ["m2", "m3", "m4"]
    assert texts(list(newest_before.messages)) == ["m3", "m2"]


async def test_list_messages_before_a_message_of_another_agent_is_not_found(
    messages: Messages, actor: Actor
) -> None:
    agent_id, other = new_agent_id(), new_agent_id()
    with acting_as(actor):
        (foreign,) = await append(messages, other, "run-1", 0, user("elsewhere"))
        await append(messages, agent_id, "run-1", 0, user("here"))
        with pytest.raises(NotFound) as missing:
            await list_page(messages, agent_id, before=foreign.id)

    assert missing.value.reason == "MESSAGE_NOT_FOUND"
    assert missing.value.metadata == {"message_id": foreign.id}


async def test_list_messages_filters_by_run(messages: Messages, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await append(messages, agent_id, "run-1", 0, user("a1"))
        await append(messages, agent_id, "run-2", 0, user("b1"), assistant("b2"))
        await append(messages, agent_id, "run-1", 1, user("a2"))
        await append(messages, agent_id, "run-2", 1, user("b3"))
        run_2 = await list_page(messages, agent_id, run_id="run-2")
        run_2_paged = await list_page(messages, agent_id, run_id="run-2", page_size=2)
        run_2_rest = await list_page(
            messages, agent_id, run_id="run-2", page_size=2, page_token=run_2_paged.next_page_token
        )

    assert texts(list(run_2.messages)) == ["b1", "b2", "b3"]
    assert {m.run_id for m in run_2.messages} == {"run-2"}
    assert texts(list(run_2_paged.messages)) == ["b1", "b2"]
    assert texts(list(run_2_rest.messages)) == ["b3"]


async def test_list_messages_with_a_garbage_page_token_is_invalid_argument(
    messages: Messages, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await list_page(messages, new_agent_id(), page_token="%%%garbage")

    assert violation_fields(refused.value) == ["page_token"]


async def test_list_messages_without_agent_id_is_invalid_argument(messages: Messages, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await list_page(messages, "")

    assert violation_fields(refused.value) == ["agent_id"]


async def test_list_messages_of_an_agent_without_history_is_empty(messages: Messages, actor: Actor) -> None:
    with acting_as(actor):
        page = await list_page(messages, new_agent_id())

    assert list(page.messages) == []
    assert page.next_page_token == ""


# --- context window ------------------------------------------------------------------------------------


async def test_context_window_holds_the_history_oldest_first_with_its_count(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await append(messages, agent_id, "run-1", 0, user("hi"), assistant("hello"))
        await append(messages, agent_id, "run-2", 0, user("again"), assistant("yes"))
        window = await messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent_id))

    assert texts(list(window.messages)) == ["hi", "hello", "again", "yes"]
    assert window.history_count == 4


async def test_context_window_of_an_agent_without_history_is_empty(messages: Messages, actor: Actor) -> None:
    with acting_as(actor):
        window = await messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=new_agent_id()))

    assert list(window.messages) == []
    assert window.history_count == 0


async def test_context_window_without_agent_id_is_invalid_argument(messages: Messages, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await messages.GetContextWindow(history_pb2.GetContextWindowRequest())

    assert violation_fields(refused.value) == ["agent_id"]


# --- purge ---------------------------------------------------------------------------------------------


async def test_purge_deletes_the_whole_history_of_one_agent_only(messages: Messages, actor: Actor) -> None:
    agent_id, other = new_agent_id(), new_agent_id()
    with acting_as(actor):
        await five_messages(messages, agent_id)
        await append(messages, other, "run-1", 0, user("kept"))
        purged = await messages.PurgeAgentMessages(history_pb2.PurgeAgentMessagesRequest(agent_id=agent_id))
        listed = await list_page(messages, agent_id)
        window = await messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent_id))
        again = await messages.PurgeAgentMessages(history_pb2.PurgeAgentMessagesRequest(agent_id=agent_id))
        others = await list_page(messages, other)

    assert purged.deleted_count == 5
    assert list(listed.messages) == []
    assert list(window.messages) == []
    assert window.history_count == 0
    assert again.deleted_count == 0
    assert texts(list(others.messages)) == ["kept"]


async def test_history_restarts_cleanly_after_a_purge(messages: Messages, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        old = await append(messages, agent_id, "run-1", 0, user("old"))
        await messages.PurgeAgentMessages(history_pb2.PurgeAgentMessagesRequest(agent_id=agent_id))
        new = await append(messages, agent_id, "run-1", 0, user("new"))
        window = await messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent_id))

    assert new[0].id != old[0].id
    assert texts(list(window.messages)) == ["new"]
    assert window.history_count == 1


# --- organization isolation ----------------------------------------------------------------------------


async def test_another_org_sees_nothing_of_an_agents_history_and_cannot_purge_it(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        stored = await five_messages(messages, agent_id)

    with acting_as(new_actor()):
        listed = await list_page(messages, agent_id)
        window = await messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent_id))
        purged = await messages.PurgeAgentMessages(history_pb2.PurgeAgentMessagesRequest(agent_id=agent_id))
        with pytest.raises(NotFound):
            await list_page(messages, agent_id, after=stored[0].id)

    with acting_as(actor):
        still = await list_page(messages, agent_id)

    assert list(listed.messages) == []
    assert list(window.messages) == []
    assert window.history_count == 0
    assert purged.deleted_count == 0
    assert [m.id for m in still.messages] == [m.id for m in stored]


async def test_retry_by_another_org_of_the_same_step_never_returns_the_first_orgs_messages(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await append(messages, agent_id, "run-1", 0, user("private"))

    returned: list[message_pb2.Message] = []
    refusal = ""
    with acting_as(new_actor()):
        try:
            returned = await append(messages, agent_id, "run-1", 0, user("probe"))
        except MnemoError as refused:  # a refusal is acceptable here, as long as it leaks nothing
            refusal = refused.message

    assert "private" not in refusal
    assert all(m.user.text != "private" for m in returned)


async def test_append_by_another_org_for_an_agent_id_in_use_fails_cleanly_not_with_internal(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        stored = await append(messages, agent_id, "run-1", 0, user("private"))

    outcome: MnemoError | None = None
    with acting_as(new_actor()):
        try:
            await append(messages, agent_id, "run-9", 0, user("intruder"))
        except MnemoError as refused:
            outcome = refused
    with acting_as(actor):
        still = await list_page(messages, agent_id)

    assert [m.id for m in still.messages] == [m.id for m in stored]
    assert not isinstance(outcome, Internal), f"got {outcome!r}"


async def test_list_messages_with_a_tampered_page_token_is_invalid_argument(
    messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    tampered = encode_token({"s": "not-a-number"})
    with acting_as(actor):
        await five_messages(messages, agent_id)
        with pytest.raises(InvalidArgument) as refused:
            await list_page(messages, agent_id, page_token=tampered)

    assert violation_fields(refused.value) == ["page_token"]
