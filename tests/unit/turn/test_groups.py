"""Group managers and agent-to-agent guards against in-memory memory, tools and model (real runs table)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mnemo.common.v1 import message_pb2
from mnemo.rest import agent_files
from mnemo.tools.v1 import tool_pb2
from mnemo_agent import group_managers as policies
from mnemo_agent.group_managers import Conversation, Member, chosen
from mnemo_agent.runs import Lineage
from mnemo_agent.store import Agent
from mnemo_agent.turn import TurnRequest, TurnResult, Turns
from mnemo_core.actor import Actor
from tests.unit.turn.fakes import SETTINGS, Mesh, calls, reply

WAIT = "send_message_to_agent_and_wait_for_reply"
ROOT = Path(__file__).resolve().parents[3]


class Members:
    """Member turns through the fakes' turns, keyed by their place in one group run."""

    def __init__(self, turns: Turns, actor: Actor, run: str) -> None:
        self._turns = turns
        self._actor = actor
        self._run = run
        self.inputs: list[list[str]] = []

    async def take(self, member: Member, inputs: list[message_pb2.Message], turn: int) -> TurnResult:
        self.inputs.append([m.user.text or m.system.text for m in inputs])
        request = TurnRequest(
            member.id, inputs, idempotency_key=f"{self._run}/{turn}", lineage=Lineage(group_run_id=self._run)
        )
        return await self._turns.send(self._actor, request)


def user(text: str) -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text))


def talk(turns: Members, *agents: Agent) -> Conversation:
    conversation = Conversation({a.id: Member(a.id, a.name) for a in agents}, turns)
    conversation.heard([user("hello")])
    return conversation


async def test_round_robin_shows_each_member_what_the_others_said_since_it_last_spoke(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    a = await fakes.agent(actor.org_id, name="ann")
    b = await fakes.agent(actor.org_id, name="bob")
    fakes.model.script(reply("one"), reply("two"), reply("three"))
    members = Members(turns, actor, "grouprun-1")

    stop = await policies.round_robin(talk(members, a, b), [a.id, b.id], 3)

    assert stop == policies.turn_pb2.STOP_REASON_END_TURN
    assert members.inputs == [["hello"], ["hello", "[ann] one"], ["[bob] two"]]


async def test_a_group_run_executed_again_replays_its_turns_without_calling_the_model(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    a = await fakes.agent(actor.org_id, name="ann")
    b = await fakes.agent(actor.org_id, name="bob")
    fakes.model.script(reply("one"), reply("two"))
    first = talk(Members(turns, actor, "grouprun-2"), a, b)
    await policies.round_robin(first, [a.id, b.id], 2)
    calls_before = len(fakes.model.requests)

    again = talk(Members(turns, actor, "grouprun-2"), a, b)
    await policies.round_robin(again, [a.id, b.id], 2)

    assert len(fakes.model.requests) == calls_before
    assert [r.messages for r in again.results] == [r.messages for r in first.results]


async def test_a_dynamic_manager_names_speakers_and_one_it_does_not_name_is_the_next_in_order(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    lead = await fakes.agent(actor.org_id, name="lead")
    a = await fakes.agent(actor.org_id, name="ann")
    b = await fakes.agent(actor.org_id, name="bob")
    fakes.model.script(
        reply("Bob should go"),
        reply("b1"),
        reply("hmm"),
        reply("a1"),
        reply("hmm"),
        reply("b2"),
        reply("STOP"),
    )
    members = Members(turns, actor, "grouprun-3")

    stop = await policies.dynamic(talk(members, lead, a, b), lead.id, [a.id, b.id], 10, "STOP")

    assert stop == policies.turn_pb2.STOP_REASON_END_TURN

    def answers(agent: Agent) -> list[str]:
        return [m.assistant.text for m in fakes.memory.histories[agent.id] if m.HasField("assistant")]

    assert answers(b) == ["b1", "b2"]
    assert answers(a) == ["a1"]
    assert answers(lead) == ["Bob should go", "hmm", "hmm", "STOP"]
    assert chosen(f"let {a.id} speak", [Member(a.id, "ann"), Member(b.id, "bob")]) == Member(a.id, "ann")
    assert chosen("BOB, then ann", [Member(a.id, "ann"), Member(b.id, "bob")]) == Member(b.id, "bob")
    assert chosen("annabel", [Member(a.id, "ann")]) is None


async def test_a_chain_of_messages_stops_at_its_turn_budget(fakes: Mesh, actor: Actor) -> None:
    tool = tool_pb2.Tool(
        id=f"tool-builtin-{WAIT}",
        name=WAIT,
        json_schema=json.dumps({"type": "object"}),
        tool_type=tool_pb2.TOOL_TYPE_CONTROL,
        return_char_limit=10_000,
    )
    fakes.tools.tools[tool.id] = tool
    turns = fakes.turns(settings=dataclasses.replace(SETTINGS, message_max_turns=1, message_max_depth=5))
    c = await fakes.agent(actor.org_id, name="carl")
    b = await fakes.agent(actor.org_id, name="bob", tool_ids=[tool.id])
    a = await fakes.agent(actor.org_id, name="ann", tool_ids=[tool.id])
    fakes.model.script(
        calls((WAIT, {"agent_id": b.id, "message": "ask carl"}, "c1")),
        calls((WAIT, {"agent_id": c.id, "message": "hi carl"}, "c2")),
        reply("carl is out of reach"),
        reply("bob could not reach carl"),
    )

    result = await turns.send(actor, TurnRequest(a.id, [user("go")]))

    assert result.messages[-1].assistant.text == "bob could not reach carl"
    bob_return = next(m for m in fakes.memory.histories[b.id] if m.HasField("tool_return"))
    assert "has taken its 1 turns" in bob_return.tool_return.content
    assert fakes.memory.histories[c.id] == []


def test_the_published_agent_file_schema_is_the_one_the_models_make() -> None:
    published = json.loads((ROOT / "docs/schemas/agent-file.v1.json").read_text())
    assert published == agent_files.schema(), (
        "regenerate it: python -m mnemo.rest.agent_files > docs/schemas/agent-file.v1.json"
    )
