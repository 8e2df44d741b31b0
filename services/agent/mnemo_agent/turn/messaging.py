"""Agent-to-agent messages: the built-in tools an agent uses to talk to other agents of its organization.

- `send_message_to_agent_and_wait_for_reply`: the other agent takes a turn now; its reply is the result.
- `send_message_to_agent_async`: the other agent's turn is started in the background (a run, restarted
  after a crash like every async turn); the result says so at once.
- `send_message_to_agents_matching_tags`: every other agent with all the given tags takes a turn, at once;
  the result holds their replies.

Loop guards, so that two agents cannot keep each other busy forever: each message makes the other agent's
run a child of the sender's, one level deeper in the same chain. A chain is at most `message_max_depth`
messages deep and holds at most `message_max_turns` runs in all (counted in the runs table, so restarts and
replicas keep the count). An agent whose turn waits for a reply cannot be asked for another turn in the
same chain (its agent is held: that would wait forever); the model is told so instead.

The turn a message asks for is recorded under a key derived from the sender's run and tool call, so a
sender that resumes after a crash gets the reply of the turn it asked for, not a second turn. Only agents
of the sender's organization can be reached: other agents are NOT_FOUND, as everywhere.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, Protocol

from mnemo.common.v1 import message_pb2
from mnemo_agent.memory_tools import ToolError
from mnemo_agent.runs import STOP_REASONS
from mnemo_agent.store import Agent, Run
from mnemo_agent.turn.events import TurnResult
from mnemo_agent.turn.ports import Caller
from mnemo_agent.turn.request import TurnRequest, TurnSettings
from mnemo_core.actor import Actor, current_actor_or_none
from mnemo_core.errors import MnemoError, NotFound

WAIT = "send_message_to_agent_and_wait_for_reply"
ASYNC = "send_message_to_agent_async"
BY_TAGS = "send_message_to_agents_matching_tags"
# Most agents one tag message reaches (their turns run at once).
MAX_TAGGED_AGENTS = 10
MAX_MESSAGE_CHARS = 100_000
# What chat APIs accept as a speaker name.
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


class TurnSender(Protocol):
    """How messages become turns of other agents (the service's `Turns`)."""

    async def send(self, actor: Actor, request: TurnRequest) -> TurnResult: ...

    async def send_async(self, actor: Actor, request: TurnRequest) -> Run: ...


class AgentDirectory(Protocol):
    """Finds the agents a message may reach (the caller's organization only)."""

    async def row(self, org_id: str, agent_id: str) -> Agent: ...

    async def tagged(self, org_id: str, tags: Sequence[str], limit: int) -> list[Agent]: ...


def speaker_name(name: str) -> str:
    """An agent's name as a chat speaker name (letters, digits, _ and -)."""
    return _NAME_CHARS.sub("_", name).strip("_")[:64] or "agent"


def reply_text(result: TurnResult) -> str:
    """What an agent answered in a turn (its assistant messages), or why it said nothing."""
    text = "\n".join(m.assistant.text for m in result.messages if m.HasField("assistant")).strip()
    if text:
        return text
    return f"(no reply: the turn ended with {STOP_REASONS.name(result.stop_reason) or 'error'})"


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"argument '{name}' is required and must be a non-empty string")
    if len(value) > MAX_MESSAGE_CHARS:
        raise ToolError(f"argument '{name}' is longer than {MAX_MESSAGE_CHARS} characters")
    return value


class AgentMessaging:
    """Runs the agent-to-agent tools for a calling turn."""

    names = frozenset({WAIT, ASYNC, BY_TAGS})

    def __init__(self, turns: TurnSender, agents: AgentDirectory, settings: TurnSettings) -> None:
        self._turns = turns
        self._agents = agents
        self._max_depth = settings.message_max_depth
        self._budget = settings.message_max_turns

    async def run(self, caller: Caller, name: str, args: dict[str, Any]) -> str:
        """Runs one tool; returns what the model is told. Raises ToolError for what the model can fix."""
        if name == WAIT:
            target = await self._target(caller, _text(args, "agent_id"), waits=True)
            return reply_text(await self._ask(caller, target, _text(args, "message"), caller.call_id))
        if name == ASYNC:
            target = await self._target(caller, _text(args, "agent_id"), waits=False)
            run = await self._tell(caller, target, _text(args, "message"))
            return f"Sent to agent '{target.name}' ({target.id}) as run {run.id}; it does not reply to this call."
        if name == BY_TAGS:
            return await self._broadcast(caller, args)
        raise ToolError(f"'{name}' is not an agent-to-agent tool")

    async def _target(self, caller: Caller, agent_id: str, *, waits: bool) -> Agent:
        """The agent a message goes to, if the guards let it through."""
        if agent_id == caller.agent_id:
            raise ToolError("you cannot send a message to yourself")
        if caller.lineage.depth + 1 > self._max_depth:
            raise ToolError(
                f"this conversation between agents is {caller.lineage.depth} messages deep already, the most "
                f"allowed is {self._max_depth}; answer with what you have"
            )
        if waits and agent_id in caller.lineage.waiting:
            raise ToolError(
                f"agent {agent_id} is waiting for your reply; answer it instead of sending it a message"
            )
        try:
            return await self._agents.row(caller.org_id, agent_id)
        except NotFound:
            raise ToolError(f"there is no agent {agent_id}") from None

    def _message(self, caller: Caller, text: str, *, waits: bool) -> message_pb2.Message:
        if waits:
            header = f"Message from agent '{caller.name}' ({caller.agent_id}), which waits for your reply:"
        else:
            header = (
                f"Message from agent '{caller.name}' ({caller.agent_id}). It does not wait for a reply; "
                f'to answer it, call {ASYNC} with agent_id "{caller.agent_id}".'
            )
        return message_pb2.Message(
            user=message_pb2.UserContent(text=f"{header}\n{text}", name=speaker_name(caller.name))
        )

    def _request(self, caller: Caller, target: Agent, text: str, key: str, *, waits: bool) -> TurnRequest:
        lineage = caller.lineage.child(caller.run_id, caller.agent_id, waits=waits, budget=self._budget)
        return TurnRequest(
            target.id,
            [self._message(caller, text, waits=waits)],
            idempotency_key=f"message:{caller.run_id}:{key}",
            lineage=lineage,
        )

    def _actor(self, caller: Caller) -> Actor:
        current = current_actor_or_none()
        user = current.user_id if current is not None else f"agent:{caller.agent_id}"
        return Actor(org_id=caller.org_id, user_id=user)

    async def _ask(self, caller: Caller, target: Agent, text: str, key: str) -> TurnResult:
        request = self._request(caller, target, text, key, waits=True)
        try:
            return await self._turns.send(self._actor(caller), request)
        except MnemoError as exc:
            raise ToolError(f"agent '{target.name}' ({target.id}) could not answer: {exc.message}") from None

    async def _tell(self, caller: Caller, target: Agent, text: str) -> Run:
        request = self._request(caller, target, text, caller.call_id, waits=False)
        try:
            return await self._turns.send_async(self._actor(caller), request)
        except MnemoError as exc:
            raise ToolError(f"the message to agent {target.id} was not sent: {exc.message}") from None

    async def _broadcast(self, caller: Caller, args: dict[str, Any]) -> str:
        tags = args.get("tags")
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
            raise ToolError("argument 'tags' is required and must be a non-empty list of strings")
        text = _text(args, "message")
        found = [
            agent
            for agent in await self._agents.tagged(caller.org_id, tags, MAX_TAGGED_AGENTS + 2)
            if agent.id != caller.agent_id
        ]
        if not found:
            raise ToolError(f"no other agent has all of the tags {', '.join(tags)}")
        if len(found) > MAX_TAGGED_AGENTS:
            raise ToolError(
                f"more than {MAX_TAGGED_AGENTS} agents have these tags; use tags that pick fewer agents"
            )
        for agent in found:
            await self._target(caller, agent.id, waits=True)
        results = await asyncio.gather(
            *(self._ask(caller, agent, text, f"{caller.call_id}:{agent.id}") for agent in found),
            return_exceptions=True,
        )
        lines = [f"Replies of {len(found)} agent(s):"]
        for agent, result in zip(found, results, strict=True):
            if isinstance(result, ToolError):
                answer = f"(error: {result})"
            elif isinstance(result, BaseException):
                raise result
            else:
                answer = reply_text(result)
            lines.append(f"- {agent.name} ({agent.id}): {answer}")
        return "\n".join(lines)
