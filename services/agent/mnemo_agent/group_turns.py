"""Messages to groups: a group run around the manager policy, recorded, crash-safe and idempotent.

A message to a group is a group run (unique per group and idempotency key; one running at a time per
group). Its member turns are ordinary runs of their agents, recorded under the key `<group run>/<n>` and
tagged with the group run, so:

- a retry of a finished group run with the same key executes the policy again, and every member turn
  answers from its run (replayed, no model call): the same messages come back and nothing is added;
- a group run interrupted by a crash (failed as interrupted at the next start, like every run) is
  resumed by a retry with its key: the turns it had taken replay, the one that was cut resumes from its
  last stored step, and the policy goes on from there. Nothing is duplicated.

Cancelling a group run cancels the member turn in progress (its run records that) and no member speaks
after it. A group run stopped by a shutdown stays resumable, as turns do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from mnemo.agent.v1 import group_pb2
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo_agent import group_managers as policies
from mnemo_agent.group_managers import Conversation, GroupCancelled, Member
from mnemo_agent.group_store import Group, GroupRun, GroupRunQueries
from mnemo_agent.groups import Groups, max_turns_of, termination_token_of
from mnemo_agent.runs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    STOP_REASONS,
    Lineage,
)
from mnemo_agent.sleeptime import Sleeptime
from mnemo_agent.store import AgentQueries
from mnemo_agent.turn import MessagesStored, RunStarted, TokenDelta, TurnEvent, TurnRequest, TurnResult, Turns
from mnemo_agent.turn.lifecycle import AgentLocks, key_reused
from mnemo_agent.turn.request import check_inputs
from mnemo_core.actor import Actor
from mnemo_core.db import Database
from mnemo_core.errors import Aborted, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text
from mnemo_core.wire import utcnow

# How long CancelGroupRun waits for the group run to record its outcome.
CANCEL_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class GroupRequest:
    """One message to a group, as a caller asks for it."""

    group_id: str
    messages: Sequence[message_pb2.Message]
    max_turns: int = 0
    idempotency_key: str = ""
    stream_tokens: bool = False


@dataclass(frozen=True, slots=True)
class GroupRunStarted:
    """The group run is recorded: the first event of a group stream."""

    group_run_id: str


@dataclass(frozen=True, slots=True)
class MemberTurnStarted:
    """A member's turn begins (its run is recorded)."""

    agent_id: str
    run_id: str
    turn: int


@dataclass(frozen=True, slots=True)
class GroupResult:
    """What a group run produced: every member's messages in order, the usage, why it ended."""

    group_run_id: str
    messages: list[message_pb2.Message]
    usage: turn_pb2.Usage
    stop_reason: turn_pb2.StopReason.ValueType
    run_ids: list[str]


GroupEvent = GroupRunStarted | MemberTurnStarted | MessagesStored | TokenDelta | GroupResult


@dataclass
class _Execution:
    actor: Actor
    group: Group
    run: GroupRun
    inputs: list[message_pb2.Message]
    max_turns: int
    sink: Any
    stream_tokens: bool
    # A finished run executed again to answer a retry: nothing about it is recorded again.
    replay: bool
    run_ids: list[str] = field(default_factory=list)
    cancelled: bool = False


class _MemberTurns:
    """Member turns of one group run, through the agents' own turns."""

    def __init__(self, owner: GroupTurns, execution: _Execution) -> None:
        self._owner = owner
        self._execution = execution

    async def take(self, member: Member, inputs: list[message_pb2.Message], turn: int) -> TurnResult:
        execution = self._execution
        if not execution.replay and await self._owner.cancel_requested(execution.run.id):
            raise GroupCancelled
        sink = execution.sink

        def forward(event: TurnEvent) -> None:
            match event:
                case RunStarted(run_id=run_id):
                    sink(MemberTurnStarted(member.id, run_id, turn))
                case MessagesStored() | TokenDelta():
                    sink(event)
                case _:
                    pass

        result = await self._owner.turns.send(
            execution.actor,
            TurnRequest(
                member.id,
                inputs,
                idempotency_key=f"{execution.run.id}/{turn}",
                stream_tokens=execution.stream_tokens,
                lineage=Lineage(group_run_id=execution.run.id),
            ),
            sink=forward,
        )
        execution.run_ids.append(result.run_id)
        if not execution.replay:
            await self._owner.progress(execution.run.id, execution.run_ids)
        return result


def _sum(results: Sequence[TurnResult]) -> turn_pb2.Usage:
    usage = turn_pb2.Usage()
    for result in results:
        usage.prompt_tokens += result.usage.prompt_tokens
        usage.completion_tokens += result.usage.completion_tokens
        usage.total_tokens += result.usage.total_tokens
        usage.step_count += result.usage.step_count
    return usage


class GroupTurns:
    """Sends messages to groups and keeps their runs."""

    def __init__(
        self,
        db: Database,
        groups: Groups,
        turns: Turns,
        sleeptime: Sleeptime,
        *,
        lease_seconds: float,
        single_writer: bool,
    ) -> None:
        self._db = db
        self._groups = groups
        self.turns = turns
        self._sleeptime = sleeptime
        self._lease = timedelta(seconds=lease_seconds)
        self._single_writer = single_writer
        self._locks = AgentLocks()
        self._active: dict[str, tuple[asyncio.Task[Any], _Execution]] = {}
        self.stopping = False

    # ----- sending -----

    async def send(self, actor: Actor, request: GroupRequest, *, sink: Any = None) -> GroupResult:
        """Runs a group run (or replays / resumes the one recorded under the idempotency key)."""
        inputs = check_inputs(request.messages)
        check_text(request.idempotency_key, "idempotency_key", max_chars=256)
        group = await self._groups.get(actor.org_id, request.group_id)
        max_turns = max_turns_of(group, request.max_turns, self._groups.max_turns_limit)
        serialized = group_pb2.SendGroupMessageRequest(
            group_id=group.id, messages=inputs, max_turns=max_turns
        ).SerializeToString(deterministic=True)
        return await asyncio.create_task(
            self._send(actor, group, inputs, max_turns, request, serialized, sink or (lambda _: None))
        )

    @contextlib.asynccontextmanager
    async def stream(self, actor: Actor, request: GroupRequest) -> AsyncIterator[AsyncIterator[GroupEvent]]:
        """Runs a group run; its events come as they happen (`GroupRunStarted` first, `GroupResult` last).
        Leaving the block early cancels the group run."""
        queue: asyncio.Queue[GroupEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self.send(actor, request, sink=queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))

        async def events() -> AsyncIterator[GroupEvent]:
            while (event := await queue.get()) is not None:
                yield event
            yield task.result()

        try:
            yield events()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _send(
        self,
        actor: Actor,
        group: Group,
        inputs: list[message_pb2.Message],
        max_turns: int,
        request: GroupRequest,
        serialized: bytes,
        sink: Any,
    ) -> GroupResult:
        async with self._locks.hold(group.id):
            run, replay = await self._start(actor, group, request.idempotency_key, serialized)
            sink(GroupRunStarted(run.id))
            execution = _Execution(
                actor, group, run, inputs, max_turns, sink, request.stream_tokens, replay=replay
            )
            return await self._execute(execution)

    async def _start(self, actor: Actor, group: Group, key: str, request: bytes) -> tuple[GroupRun, bool]:
        """A new running group run, or the one of `key`: (run, whether it is only replayed)."""
        now = utcnow()
        run = GroupRun(
            id=new_id("grouprun"),
            org_id=actor.org_id,
            group_id=group.id,
            status=RUNNING,
            created_at=now,
            idempotency_key=key or None,
            request=request,
            lease_expires_at=now + self._lease,
        )
        for _ in range(3):
            try:
                await self._db.write(GroupRunQueries.insert, run)
                return run, False
            except IntegrityError:
                existing = await self._db.read(GroupRunQueries.by_key, group.id, key) if key else None
                if existing is not None:
                    return await self._again(existing, request)
                await self._release_orphan(group.id)
        raise Aborted("another message to this group is being answered; retry later", reason="GROUP_BUSY")

    async def _again(self, run: GroupRun, request: bytes) -> tuple[GroupRun, bool]:
        """A group message sent again with its key: replay it when it ended, else take it over to resume."""
        if run.request is not None and run.request != request:
            raise key_reused(run.id)
        if run.status in (COMPLETED, CANCELLED):
            return run, True
        live = run.lease_expires_at is not None and run.lease_expires_at > utcnow()
        if run.id in self._active or (run.status == RUNNING and live):
            raise Aborted("a group run with this idempotency key is still running", reason="RUN_IN_PROGRESS")
        values = {
            "status": RUNNING,
            "error": "",
            "lease_expires_at": utcnow() + self._lease,
            "completed_at": None,
        }
        try:
            taken = await self._db.write(GroupRunQueries.change, run.id, [FAILED, RUNNING], values)
        except IntegrityError:
            taken = False
        if not taken:
            raise Aborted("another message to this group is being answered; retry later", reason="GROUP_BUSY")
        return run, False

    async def _release_orphan(self, group_id: str) -> None:
        """Fails the group's running run when its lease ran out (its process is gone); raises when it is live."""
        holder = await self._db.read(GroupRunQueries.running, group_id)
        if holder is None:
            return
        if holder.id in self._active or (holder.lease_expires_at and holder.lease_expires_at > utcnow()):
            raise Aborted("another message to this group is being answered; retry later", reason="GROUP_BUSY")
        values = {"status": FAILED, "error": INTERRUPTED, "lease_expires_at": None, "completed_at": utcnow()}
        await self._db.write(GroupRunQueries.change, holder.id, [RUNNING], values)

    # ----- executing -----

    async def _execute(self, execution: _Execution) -> GroupResult:
        group, run = execution.group, execution.run
        rows = await self._db.read(AgentQueries.in_org, group.org_id, group.everyone)
        missing = [agent_id for agent_id in group.everyone if agent_id not in rows]
        if missing:
            raise NotFound(f"agent {missing[0]} of group {group.id} not found", reason="AGENT_NOT_FOUND")
        members = {a: Member(a, rows[a].name, rows[a].description) for a in group.everyone}
        talk = Conversation(members, _MemberTurns(self, execution), cancelled=lambda: execution.cancelled)
        talk.heard(execution.inputs)
        current = asyncio.current_task()
        assert current is not None
        self._active[run.id] = (current, execution)
        # A timer, not a task: most group runs end long before their lease needs extending.
        beats: list[asyncio.Future[None]] = []
        heartbeat = None
        if not execution.replay:
            heartbeat = asyncio.get_running_loop().call_later(
                self._lease.total_seconds() / 3,
                lambda: beats.append(asyncio.ensure_future(self._heartbeat(run.id))),
            )
        try:
            stop = await self._policy(execution, talk)
        except GroupCancelled:
            stop = turn_pb2.STOP_REASON_CANCELLED
        except asyncio.CancelledError:
            if self.stopping:
                await asyncio.shield(
                    self._finish(execution, talk, FAILED, turn_pb2.STOP_REASON_ERROR, INTERRUPTED)
                )
                raise
            stop = turn_pb2.STOP_REASON_CANCELLED
        except BaseException as exc:
            error = getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}"
            await asyncio.shield(self._finish(execution, talk, FAILED, turn_pb2.STOP_REASON_ERROR, error))
            raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            for beat in beats:
                beat.cancel()
            self._active.pop(run.id, None)
        status = CANCELLED if stop == turn_pb2.STOP_REASON_CANCELLED else COMPLETED
        await asyncio.shield(self._finish(execution, talk, status, stop))
        if group.manager_type == policies.SLEEPTIME and not execution.replay and status == COMPLETED:
            assert group.manager_agent_id is not None
            frequency = group.sleeptime_frequency or self._sleeptime.default_frequency
            self._sleeptime.schedule(
                execution.actor, f"group:{group.id}", group.manager_agent_id, group.agent_ids, frequency
            )
        return GroupResult(
            run.id,
            [m for result in talk.results for m in result.messages],
            _sum(talk.results),
            stop,
            list(execution.run_ids),
        )

    async def _policy(self, execution: _Execution, talk: Conversation) -> turn_pb2.StopReason.ValueType:
        group = execution.group
        manager = group.manager_agent_id or ""
        if group.manager_type == policies.SUPERVISOR:
            return await policies.supervisor(talk, manager, group.agent_ids)
        if group.manager_type == policies.DYNAMIC:
            token = termination_token_of(group)
            return await policies.dynamic(talk, manager, group.agent_ids, execution.max_turns, token)
        if group.manager_type == policies.SLEEPTIME:
            return await policies.sleeptime(talk, manager)
        return await policies.round_robin(talk, group.agent_ids, execution.max_turns)

    async def _finish(
        self,
        execution: _Execution,
        talk: Conversation,
        status: str,
        stop: turn_pb2.StopReason.ValueType,
        error: str = "",
    ) -> None:
        if execution.replay:
            return
        usage = _sum(talk.results)
        values = {
            "status": status,
            "stop_reason": STOP_REASONS.name(stop),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "step_count": usage.step_count,
            "run_ids": list(execution.run_ids),
            "error": error,
            "lease_expires_at": None,
            "completed_at": utcnow(),
        }
        await self._db.write(GroupRunQueries.finish, execution.run.id, values)

    async def progress(self, run_id: str, run_ids: list[str]) -> None:
        """Records the member runs taken so far (GetGroupRun shows them while the run goes on)."""
        await self._db.write(GroupRunQueries.change, run_id, [RUNNING], {"run_ids": list(run_ids)})

    async def cancel_requested(self, run_id: str) -> bool:
        """Whether another replica was asked to cancel the run (one process owns a SQLite database)."""
        if self._single_writer:
            return False
        run = await self._db.read(lambda conn: GroupRunQueries.get_any(conn, run_id))
        return run is not None and run.cancel_requested

    async def _heartbeat(self, run_id: str) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self._db.write(
                    GroupRunQueries.change, run_id, [RUNNING], {"lease_expires_at": utcnow() + self._lease}
                )
            await asyncio.sleep(self._lease.total_seconds() / 3)

    # ----- runs -----

    async def get_run(self, org_id: str, run_id: str, group_id: str = "") -> GroupRun:
        """One group run of the organization (and of the group, when given)."""
        require_id(run_id, "group_run_id")
        run = await self._db.read(GroupRunQueries.get, org_id, run_id)
        if run is None or (group_id and run.group_id != group_id):
            raise NotFound(
                f"group run {run_id} not found",
                reason="GROUP_RUN_NOT_FOUND",
                metadata={"group_run_id": run_id},
            )
        return run

    async def list_runs(
        self, org_id: str, group_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[GroupRun], str]:
        """A group's runs, newest first; returns (page, next token)."""
        await self._groups.get(org_id, group_id)
        limit = page_size(size)
        position = decode_token(token, "group_runs")
        after = None if position is None else (position.time("t"), position.text("i"))
        runs = await self._db.read(
            lambda conn: GroupRunQueries.page(conn, org_id, group_id, after, limit + 1)
        )
        next_token = ""
        if len(runs) > limit:
            runs = runs[:limit]
            next_token = encode_token("group_runs", t=runs[-1].created_at.isoformat(), i=runs[-1].id)
        return runs, next_token

    async def cancel(self, actor: Actor, run_id: str, group_id: str = "") -> GroupRun:
        """Cancels a group run that has not finished; returns it as it is afterwards."""
        run = await self.get_run(actor.org_id, run_id, group_id)
        if run.status in FINISHED:
            return run
        active = self._active.get(run.id)
        if active is not None:
            task, execution = active
            execution.cancelled = True
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), timeout=CANCEL_WAIT)
        else:
            # Held by another replica: it looks before each member turn.
            await self._db.write(GroupRunQueries.change, run.id, [], {"cancel_requested": True})
            deadline = time.monotonic() + CANCEL_WAIT
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if (await self.get_run(actor.org_id, run_id)).status in FINISHED:
                    break
        return await self.get_run(actor.org_id, run_id)

    async def recover(self) -> None:
        """Fails the group runs a previous process left running (one process owns a SQLite database); a
        retry with the same key resumes them."""

        def tx(conn: Connection) -> int:
            return GroupRunQueries.fail_running(conn, INTERRUPTED, utcnow())

        await self._db.write(tx)

    async def aclose(self) -> None:
        """Stops the group runs in progress; they stay resumable."""
        self.stopping = True
        tasks = [task for task, _ in self._active.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
