"""A run around the loop: idempotent replay and resume, approvals, cancellation, background runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo_agent.runs import AWAITING_APPROVAL, CANCELLED, COMPLETED, CREATED, FAILED, INTERRUPTED, RUNNING
from mnemo_agent.store import Agent, Run
from mnemo_agent.turn import Decision, RunStarted, TurnRequest, TurnResult, Turns
from mnemo_core.actor import Actor
from mnemo_core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tests.unit.turn.fakes import Hang, Mesh, calls, reply

APPEND = "tool-builtin-core_memory_append"
NEEDS_APPROVAL = [{"tool_name": "core_memory_append", "type": "requires_approval"}]


def user(text: str) -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text))


def request(agent: Agent, text: str = "hi", **fields: Any) -> TurnRequest:
    return TurnRequest(agent.id, [user(text)], **fields)


def kinds(messages: list[message_pb2.Message]) -> list[str | None]:
    return [m.WhichOneof("content") for m in messages]


async def echo(arguments: dict[str, Any]) -> str:
    return f"echo {arguments.get('q', '')}"


async def hanging(
    fakes: Mesh, turns: Turns, actor: Actor, agent: Agent, **fields: Any
) -> asyncio.Task[TurnResult]:
    """A turn whose model call never answers, once the call is made (its run is recorded by then)."""
    calls_before = len(fakes.model.of())
    fakes.model.script(Hang())
    sent = asyncio.create_task(turns.send(actor, request(agent, **fields)))
    await fakes.model.wait_for_requests(calls_before + 1)
    return sent


async def holder(fakes: Mesh, agent: Agent) -> Run:
    """The run that holds the agent now."""
    run = await fakes.runs.active(agent.id)
    assert run is not None
    return run


# ----- idempotency -----


async def test_a_retry_with_the_same_key_returns_the_first_result_without_calling_the_model(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.script(reply("Once."))

    first = await turns.send(actor, request(agent, idempotency_key="k1"))
    again = await turns.send(actor, request(agent, idempotency_key="k1"))

    assert again == first
    assert len(fakes.model.requests) == 1
    assert kinds(fakes.memory.histories[agent.id]) == ["user", "assistant"]


async def test_a_key_reused_for_a_different_message_is_refused(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.script(reply("Once."))
    first = await turns.send(actor, request(agent, "one", idempotency_key="k1"))

    with pytest.raises(InvalidArgument) as refused:
        await turns.send(actor, request(agent, "two", idempotency_key="k1"))

    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert refused.value.metadata == {"run_id": first.run_id}


async def test_a_run_that_failed_mid_way_is_resumed_from_its_last_stored_step_by_a_retry(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("echo", echo)
    agent = await fakes.agent(actor.org_id, tool_ids=[tool])
    fakes.model.script(calls(("echo", {"q": "once"}, "c1")), Unavailable("the provider went away"))
    with pytest.raises(Unavailable):
        await turns.send(actor, request(agent, idempotency_key="k1"))
    fakes.model.script(reply("Recovered."))

    result = await turns.send(actor, request(agent, idempotency_key="k1"))

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert kinds(result.messages) == ["tool_call", "tool_return", "assistant"]
    assert fakes.tools.ran("echo") == [{"q": "once"}]
    assert kinds(fakes.memory.histories[agent.id]) == ["user", "tool_call", "tool_return", "assistant"]
    # The resumed step sees the stored one, not the input again.
    assert [m.content for m in fakes.model.requests[-1].messages[1:] if m.content] == ["hi", "echo once"]
    assert result.usage.step_count == 2
    assert (await fakes.runs.get(actor.org_id, result.run_id)).status == COMPLETED


async def test_a_turn_stopped_by_a_shutdown_stays_resumable(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    sent = await hanging(fakes, turns, actor, agent, idempotency_key="k1")

    turns.shutting_down()
    sent.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sent

    run = (await fakes.runs.list(actor.org_id, agent_id=agent.id))[0][0]
    assert (run.status, run.error) == (FAILED, INTERRUPTED)
    restarted = fakes.turns()
    fakes.model.script(reply("Back."))
    result = await restarted.send(actor, request(agent, idempotency_key="k1"))
    assert (result.run_id, result.stop_reason) == (run.id, turn_pb2.STOP_REASON_END_TURN)


# ----- approvals -----


async def test_a_call_that_needs_approval_stops_the_run_until_it_is_approved(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND], tool_rules=NEEDS_APPROVAL)
    fakes.model.script(calls(("core_memory_append", {"label": "human", "content": "Likes tea"}, "c1")))

    waiting = await turns.send(actor, request(agent, "I like tea"))

    assert waiting.stop_reason == turn_pb2.STOP_REASON_REQUIRES_APPROVAL
    assert kinds(waiting.messages) == ["tool_call"]
    run = await fakes.runs.get(actor.org_id, waiting.run_id)
    assert run.status == AWAITING_APPROVAL
    assert run.pending_approvals == [
        {"id": "c1", "name": "core_memory_append", "arguments": '{"label": "human", "content": "Likes tea"}'}
    ]
    assert fakes.memory_tools.ran == []
    with pytest.raises(FailedPrecondition) as blocked:
        await turns.send(actor, request(agent, "hello?"))
    assert blocked.value.reason == "APPROVAL_PENDING"
    fakes.model.script(reply("Saved."))

    resumed = await turns.approve(actor, waiting.run_id, Decision(approve=True))

    assert resumed.run_id == waiting.run_id
    assert resumed.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert kinds(resumed.messages) == ["tool_return", "assistant"]
    assert resumed.messages[0].tool_return.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS
    assert fakes.memory.block(agent.id, "human").value == "Likes tea"
    assert (await fakes.runs.get(actor.org_id, waiting.run_id)).status == COMPLETED
    with pytest.raises(FailedPrecondition) as again:
        await turns.approve(actor, waiting.run_id, Decision(approve=True))
    assert again.value.reason == "RUN_NOT_AWAITING_APPROVAL"


async def test_a_denied_call_is_reported_to_the_model_and_never_runs(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND], tool_rules=NEEDS_APPROVAL)
    fakes.model.script(calls(("core_memory_append", {"label": "human", "content": "secret"}, "c1")))
    waiting = await turns.send(actor, request(agent))
    fakes.model.script(reply("Understood."))

    resumed = await turns.approve(actor, waiting.run_id, Decision(approve=False, reason="no secrets"))

    denial = resumed.messages[0].tool_return
    assert denial.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert denial.content == "Error: the call was not run: no secrets"
    assert fakes.memory_tools.ran == []
    assert fakes.model.requests[-1].messages[-1].content == denial.content


async def test_cancelling_a_run_that_waits_for_approval_closes_its_calls(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND], tool_rules=NEEDS_APPROVAL)
    fakes.model.script(calls(("core_memory_append", {"label": "human", "content": "x"}, "c1")))
    waiting = await turns.send(actor, request(agent))

    cancelled = await turns.cancel(actor, waiting.run_id)

    assert cancelled.status == CANCELLED
    assert kinds(fakes.memory.histories[agent.id]) == ["user", "tool_call", "tool_return"]
    assert (
        fakes.memory.histories[agent.id][-1].tool_return.content
        == "Error: the call was not run: the run was cancelled"
    )
    fakes.model.script(reply("Fine."))
    assert (await turns.send(actor, request(agent))).stop_reason == turn_pb2.STOP_REASON_END_TURN


# ----- cancellation -----


async def test_cancelling_a_running_turn_records_it_and_frees_the_agent(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    sent = await hanging(fakes, turns, actor, agent)

    cancelled = await turns.cancel(actor, (await holder(fakes, agent)).id)

    assert cancelled.status == CANCELLED
    assert (await sent).stop_reason == turn_pb2.STOP_REASON_CANCELLED
    assert await fakes.runs.active(agent.id) is None
    fakes.model.script(reply("Free again."))
    assert (await turns.send(actor, request(agent))).stop_reason == turn_pb2.STOP_REASON_END_TURN


async def test_a_cancel_sent_to_another_replica_stops_the_turn(fakes: Mesh, actor: Actor) -> None:
    # Replicas share the database: the one running the turn sees the other's request by polling it.
    running, other = fakes.turns(single_writer=False), fakes.turns(single_writer=False)
    agent = await fakes.agent(actor.org_id)
    sent = await hanging(fakes, running, actor, agent)

    cancelled = await other.cancel(actor, (await holder(fakes, agent)).id)

    assert cancelled.status == CANCELLED
    assert (await sent).stop_reason == turn_pb2.STOP_REASON_CANCELLED


async def test_leaving_a_stream_early_cancels_its_run(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.script(Hang())

    async with turns.stream(actor, request(agent)) as events:
        started = await anext(events)
        await fakes.model.wait_for_requests(1)

    assert isinstance(started, RunStarted)
    assert (await fakes.runs.get(actor.org_id, started.run_id)).status == CANCELLED


async def test_turns_of_one_agent_run_one_after_another(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    first = await hanging(fakes, turns, actor, agent)
    fakes.model.script(reply("second"))
    second = asyncio.create_task(turns.send(actor, request(agent, "two")))

    first.cancel()
    result = await second

    assert [m.assistant.text for m in result.messages] == ["second"]
    assert (await first).stop_reason == turn_pb2.STOP_REASON_CANCELLED
    # The second run was recorded only once the first had ended.
    later, earlier = (await fakes.runs.list(actor.org_id, agent_id=agent.id))[0]
    assert (earlier.status, later.id) == (CANCELLED, result.run_id)
    assert earlier.completed_at is not None
    assert later.created_at >= earlier.completed_at


# ----- background runs -----


async def test_an_async_send_runs_in_the_background_and_its_run_records_the_result(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    ended: asyncio.Queue[TurnResult] = asyncio.Queue()
    turns.after_turn = lambda _actor, _agent, result: ended.put_nowait(result)
    fakes.model.script(reply("Done in the background."))

    run = await turns.send_async(actor, request(agent, idempotency_key="bg"))

    assert run.status == CREATED
    async with asyncio.timeout(5):
        result = await ended.get()
    assert result.run_id == run.id
    finished = await fakes.runs.get(actor.org_id, run.id)
    assert finished.status == COMPLETED
    assert finished.message_ids == [m.id for m in result.messages]
    assert (await turns.send_async(actor, request(agent, idempotency_key="bg"))).id == run.id


async def test_a_background_run_cancelled_before_it_started_never_runs(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    busy = await hanging(fakes, turns, actor, agent)
    queued = await turns.send_async(actor, request(agent, "later"))

    cancelled = await turns.cancel(actor, queued.id)
    busy.cancel()
    await busy
    assert await turns.run_background(actor, queued) is None

    assert cancelled.status == CANCELLED
    assert len(fakes.model.requests) == 1
    assert fakes.memory.histories[agent.id] == []


async def test_a_background_run_of_a_deleted_agent_fails_without_running(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    busy = await hanging(fakes, turns, actor, agent)
    queued = await turns.send_async(actor, request(agent, "later"))
    del fakes.rows[agent.id]

    assert await turns.run_background(actor, queued) is None

    run = await fakes.runs.get(actor.org_id, queued.id)
    assert (run.status, run.error) == (FAILED, "the agent was deleted before the run started")
    busy.cancel()
    assert (await busy).stop_reason == turn_pb2.STOP_REASON_CANCELLED
    assert RUNNING not in {r.status for r in (await fakes.runs.list(actor.org_id, agent_id=agent.id))[0]}


async def test_runs_and_agents_of_another_organization_are_not_found(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.script(reply("mine"))
    run_id = (await turns.send(actor, request(agent))).run_id
    stranger = Actor(org_id="org-other", user_id="user-other")

    with pytest.raises(NotFound):
        await turns.cancel(stranger, run_id)
    with pytest.raises(NotFound):
        await turns.approve(stranger, run_id, Decision(approve=True))
    with pytest.raises(NotFound):
        await turns.run_messages(stranger, run_id)
    with pytest.raises(NotFound):
        await turns.send(stranger, request(agent))
    assert len(fakes.model.requests) == 1
