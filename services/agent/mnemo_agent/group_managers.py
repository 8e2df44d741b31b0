"""Who speaks when in a group: the shared transcript and the four manager policies.

A group run is a conversation: the caller's messages start the transcript, and each turn a member takes
adds what it said (its assistant text). A member is shown, as the input of its turn, everything said since
it last spoke (the caller's messages as they were sent, the others' words as user messages named after
their speaker), so each agent's own history holds the whole conversation from its point of view.

- round robin: the members speak in order, `max_turns` turns in all;
- supervisor: the manager agent answers first, its answer goes to every member as their task, and the
  manager answers again with what they said: that answer is the group's;
- dynamic: before each member turn the manager agent names the next speaker (a member's id or name; one
  it does not name is the next in order), until it answers with the termination token or `max_turns`
  member turns were taken;
- sleep-time: the manager agent answers; the members are memory agents run in the background afterwards
  (see mnemo_agent.sleeptime), not here.

Every turn is taken through `MemberTurns` with its position in the group run, which makes its key: the
policies are deterministic given the members' answers, so executing a group run again replays the turns
it had taken (their runs answer again without a model call) and goes on from the first one missing.
No grpc, no database here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo_agent.turn.events import TurnResult
from mnemo_agent.turn.messaging import speaker_name

ROUND_ROBIN, SUPERVISOR, DYNAMIC, SLEEPTIME = "round_robin", "supervisor", "dynamic", "sleeptime"
MANAGER_TYPES = (ROUND_ROBIN, SUPERVISOR, DYNAMIC, SLEEPTIME)
DEFAULT_TERMINATION_TOKEN = "DONE"
DEFAULT_DYNAMIC_TURNS = 10
# A member turn that stopped for one of these stops the group run with the same reason.
_HALTING = (turn_pb2.STOP_REASON_CANCELLED, turn_pb2.STOP_REASON_REQUIRES_APPROVAL)


@dataclass(frozen=True, slots=True)
class Member:
    """An agent of a group, as the others know it."""

    id: str
    name: str
    description: str = ""


class MemberTurns(Protocol):
    """Takes (or replays) the turn at position `turn` of the group run, by `member`, with these inputs."""

    async def take(self, member: Member, inputs: list[message_pb2.Message], turn: int) -> TurnResult: ...


class GroupCancelled(Exception):
    """The group run was cancelled between two turns."""


def said(result: TurnResult) -> str:
    """What a member said in a turn: its assistant text."""
    return "\n".join(m.assistant.text for m in result.messages if m.HasField("assistant")).strip()


@dataclass(slots=True)
class _Entry:
    speaker: str  # the agent's id; "" for the caller
    message: message_pb2.Message


@dataclass
class Conversation:
    """One group run: the transcript, and the turns taken so far."""

    members: dict[str, Member]
    turns: MemberTurns
    cancelled: Callable[[], bool] = lambda: False
    entries: list[_Entry] = field(default_factory=list)
    # How many entries each agent has been shown (it saw every entry before that index).
    _shown: dict[str, int] = field(default_factory=dict)
    results: list[TurnResult] = field(default_factory=list)

    def heard(self, inputs: Sequence[message_pb2.Message]) -> None:
        """The caller's messages start (or continue) the transcript."""
        self.entries.extend(_Entry("", message) for message in inputs)

    def unseen_by(self, agent_id: str) -> list[message_pb2.Message]:
        """What was said since `agent_id` last spoke, by others."""
        return [e.message for e in self.entries[self._shown.get(agent_id, 0) :] if e.speaker != agent_id]

    async def turn(
        self, agent_id: str, extra: Sequence[message_pb2.Message] = (), *, relay: bool = True
    ) -> TurnResult:
        """`agent_id` takes a turn on what it has not seen (and `extra`); with `relay`, what it says joins
        the transcript."""
        if self.cancelled():
            raise GroupCancelled
        member = self.members[agent_id]
        inputs = [*self.unseen_by(agent_id), *extra]
        if not inputs:
            inputs = [_user("(nothing new was said; go on)")]
        result = await self.turns.take(member, inputs, len(self.results))
        self.results.append(result)
        self._shown[agent_id] = len(self.entries)
        text = said(result)
        if relay and text:
            self.entries.append(_Entry(agent_id, _user(f"[{member.name}] {text}", speaker_name(member.name))))
        return result


def _user(text: str, name: str = "") -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text, name=name))


def _system(text: str) -> message_pb2.Message:
    return message_pb2.Message(system=message_pb2.SystemContent(text=text))


def _roster(members: Sequence[Member]) -> str:
    return "\n".join(
        f"- {m.name} ({m.id})" + (f": {m.description}" if m.description else "") for m in members
    )


def halts(result: TurnResult) -> bool:
    """Whether a member turn's stop ends the group run (cancelled, or waiting for an approval)."""
    return result.stop_reason in _HALTING


async def round_robin(
    talk: Conversation, order: Sequence[str], max_turns: int
) -> turn_pb2.StopReason.ValueType:
    """The members speak in order, `max_turns` turns in all."""
    for i in range(max_turns):
        result = await talk.turn(order[i % len(order)])
        if halts(result):
            return result.stop_reason
    return turn_pb2.STOP_REASON_END_TURN


async def supervisor(
    talk: Conversation, manager: str, workers: Sequence[str]
) -> turn_pb2.StopReason.ValueType:
    """The manager delegates to every worker in order, then answers with what they said."""
    brief = _system(
        "You supervise these agents:\n"
        f"{_roster([talk.members[w] for w in workers])}\n"
        "Your reply is given to each of them as their task; their answers then come back to you, and "
        "your reply to those is the final answer."
    )
    result = await talk.turn(manager, [brief])
    if halts(result):
        return result.stop_reason
    for worker in workers:
        result = await talk.turn(worker)
        if halts(result):
            return result.stop_reason
    result = await talk.turn(manager)
    return result.stop_reason if halts(result) else turn_pb2.STOP_REASON_END_TURN


def chosen(text: str, candidates: Sequence[Member]) -> Member | None:
    """The member a manager's answer names: by id first, else the name that comes first in it."""
    for member in candidates:
        if member.id in text:
            return member
    found = [
        (match.start(), member)
        for member in candidates
        if (match := re.search(rf"(?<!\w){re.escape(member.name)}(?!\w)", text, re.IGNORECASE))
    ]
    return min(found, key=lambda pair: pair[0])[1] if found else None


async def dynamic(
    talk: Conversation, manager: str, members: Sequence[str], max_turns: int, token: str
) -> turn_pb2.StopReason.ValueType:
    """The manager names each next speaker until it says `token`; at most `max_turns` member turns."""
    candidates = [talk.members[m] for m in members]
    ask = _system(
        f"You lead a conversation between these agents:\n{_roster(candidates)}\n"
        "Reply with the name of the agent who should speak next, and nothing else; reply with "
        f"{token} when the conversation has reached its goal."
    )
    spoken, last = 0, -1
    while spoken < max_turns:
        decision = await talk.turn(manager, [ask], relay=False)
        if halts(decision):
            return decision.stop_reason
        text = said(decision)
        if token in text:
            return turn_pb2.STOP_REASON_END_TURN
        speaker = chosen(text, candidates)
        last = candidates.index(speaker) if speaker is not None else (last + 1) % len(candidates)
        result = await talk.turn(candidates[last].id)
        if halts(result):
            return result.stop_reason
        spoken += 1
    return turn_pb2.STOP_REASON_MAX_STEPS


async def sleeptime(talk: Conversation, manager: str) -> turn_pb2.StopReason.ValueType:
    """The manager answers (the group run stops as its turn did); its memory agents run afterwards."""
    return (await talk.turn(manager)).stop_reason
