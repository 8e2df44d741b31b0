"""The context window breakdown: tokens per section of an agent's next request, adding up to the whole."""

from __future__ import annotations

from mnemo.common.v1 import message_pb2
from mnemo_agent.turn.ports import Window
from mnemo_core.actor import Actor
from tests.unit.turn.fakes import Mesh, calls, reply
from tests.unit.turn.test_loop import exchanges, send

APPEND = "tool-builtin-core_memory_append"


async def test_the_sections_add_up_to_the_whole_request_and_each_holds_its_part(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND], context_window=4000)
    fakes.memory.block(agent.id, "human").value = "x" * 400
    fakes.memory.seed(agent.id, exchanges(3, size=200))
    fakes.model.script(calls(("core_memory_append", {"label": "human", "content": "y"}, "c1")), reply("ok"))
    await send(turns, actor, agent)

    found = await turns.context(actor, agent.id)

    assert found.total_tokens == (
        found.system_tokens
        + found.core_memory_tokens
        + found.tool_schema_tokens
        + found.summary_tokens
        + found.message_tokens
    )
    assert found.core_memory_tokens >= 100  # the 400 characters of the block, and more
    assert found.tool_schema_tokens > 0
    assert found.summary_tokens == 0
    assert found.message_count == 6 + 4  # the seeded exchanges, then the turn: input, call, return, answer
    assert found.message_tokens >= 6 * 50
    assert (found.context_window, found.model_context_window) == (4000, 8192)
    assert (found.exact, found.method) == (False, "estimate/fake")


async def test_a_summary_in_front_of_the_window_is_its_own_section(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    summary = message_pb2.Message(
        event=message_pb2.EventContent(type=message_pb2.EVENT_TYPE_SUMMARY, text="s" * 800, evicted_count=9)
    )
    fakes.memory.seed(agent.id, [summary, *exchanges(1)])

    async def window(agent_id: str) -> Window:
        return Window(fakes.memory.histories[agent_id], 11)

    fakes.memory.window = window  # type: ignore[method-assign]
    found = await turns.context(actor, agent.id)

    assert found.summary_tokens >= 200
    assert found.message_count == 2
    assert found.tool_schema_tokens == 0
