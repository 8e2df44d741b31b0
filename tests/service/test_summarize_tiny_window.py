"""An agent on a model with a tiny context window survives hundreds of turns: proactive and reactive
summarization, a summarizer that sometimes fails, and never a tool call split from its return.

The agent, memory, tools and llm-gateway services run in this process on loopback; the model is
the fake OpenAI-compatible provider with a small context limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.memory.v1 import message_pb2_grpc
from mnemo_agent.app import build as build_agent
from mnemo_agent.settings import AgentSettings
from mnemo_core.actor import acting_as
from tests.fakes.llm_provider import FakeProvider, error, prompt_chars, reply, tool_call, tool_calls
from tests.service.conftest import Served, clean_environment, new_actor, serving

TURNS = 500


@pytest.fixture(scope="module")
async def agent_service(
    tmp_path_factory: pytest.TempPathFactory,
    memory_service: Served,
    tools_service: Served,
    llm_service: Served,
) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("agent")
    with clean_environment(home):
        settings = AgentSettings(
            home=home,
            memory_addr=memory_service.address,
            tools_addr=tools_service.address,
            llm_addr=llm_service.address,
        )
    app = await build_agent(settings)
    async with serving(app) as served:
        yield served


def assert_pairs_intact(request: dict[str, Any]) -> None:
    """Every tool call is answered right after its assistant message, and every return has its call."""
    messages = request["messages"]
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and message.get("tool_calls"):
            wanted = [c["id"] for c in message["tool_calls"]]
            answers = []
            for later in messages[i + 1 :]:
                if later["role"] != "tool":
                    break
                answers.append(later["tool_call_id"])
            assert answers == wanted, f"calls {wanted} answered by {answers}"
        if message["role"] == "tool":
            j = i
            while messages[j]["role"] == "tool":
                j -= 1
            assert message["tool_call_id"] in {c["id"] for c in messages[j].get("tool_calls") or []}


# 500 real turns through the mesh: about 30 s on a quiet machine, several minutes on a heavily loaded one.
@pytest.mark.timeout(600)
async def test_five_hundred_turns_on_a_tiny_window_never_fail_and_never_split_a_pair(
    agent_service: Served, llm: FakeProvider
) -> None:
    actor = new_actor()
    stub = agent_service.stub(agent_pb2_grpc.AgentServiceStub)
    llm.answer_model("summarizer", reply("Earlier: the user counted turns and the assistant kept notes."))
    with acting_as(actor):
        created = await stub.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(
                    name="tiny",
                    model="openai/tiny",
                    system="You are terse.",
                    context_window=1000,
                    summarizer_model="openai/summarizer",
                    llm_options=agent_pb2.LlmOptions(parallel_tool_calls=True),
                    # Only the two tools this test calls: their schemas are part of the tiny window.
                    tool_ids=["tool-builtin-core_memory_append", "tool-builtin-core_memory_replace"],
                ),
                memory_blocks=[{"label": "notes", "value": "", "limit": 150}],
                include_base_tools=False,
            )
        )
        agent_id = created.agent.id
        stops: list[int] = []
        for turn in range(TURNS):
            if turn == 200:
                llm.answer_model("summarizer", error(500, "summarizer down", err_type="server_error"))
            if turn == 260:
                llm.answer_model("summarizer", reply("Earlier: a long count of turns."))
            if turn == 300:
                llm.limit_context(2000)  # the provider's real window is smaller than configured
            if turn == 360:
                llm.limit_context(0)
            if turn % 5 == 0:
                llm.script(
                    tool_calls(
                        [
                            ("core_memory_append", {"label": "notes", "content": f"t{turn}"}, None),
                            (
                                "core_memory_replace",
                                {"label": "notes", "old_content": "zz", "new_content": "y"},
                                None,
                            ),
                        ]
                    ),
                    reply(f"noted {turn}"),
                )
            elif turn % 3 == 0:
                llm.script(
                    tool_call("core_memory_append", {"label": "notes", "content": f"n{turn}"}), reply("ok")
                )
            else:
                llm.script(reply(f"answer to turn {turn} " + "." * (turn % 40)))
            result = await stub.SendMessage(
                agent_pb2.SendMessageRequest(
                    agent_id=agent_id,
                    messages=[
                        message_pb2.Message(user=message_pb2.UserContent(text=f"turn {turn}: " + "u" * 60))
                    ],
                )
            )
            stops.append(result.stop_reason)

    assert stops == [turn_pb2.STOP_REASON_END_TURN] * TURNS
    requests = llm.requests()
    agent_requests = [r for r in requests if r["model"] == "tiny"]
    assert sum(r["model"] == "summarizer" for r in requests) > 20
    # While the provider's window was smaller than configured, it refused requests and the agent recovered.
    assert any(prompt_chars(r) > 2000 for r in agent_requests[: len(agent_requests)])
    for request in agent_requests:
        assert_pairs_intact(request)


async def test_history_of_a_compacted_agent_keeps_every_message(
    agent_service: Served, memory_service: Served, llm: FakeProvider
) -> None:
    actor = new_actor()
    stub = agent_service.stub(agent_pb2_grpc.AgentServiceStub)
    messages = memory_service.stub(message_pb2_grpc.MessageServiceStub)
    llm.answer_model("summarizer", error(500, "down", err_type="server_error"))
    with acting_as(actor):
        created = await stub.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(
                    name="small",
                    model="openai/small",
                    system="Short.",
                    context_window=700,
                    summarizer_model="openai/summarizer",
                ),
            )
        )
        for turn in range(40):
            llm.script(reply("r" * 100))
            await stub.SendMessage(
                agent_pb2.SendMessageRequest(
                    agent_id=created.agent.id,
                    messages=[message_pb2.Message(user=message_pb2.UserContent(text=f"{turn} " + "q" * 100))],
                )
            )
        page = await messages.ListMessages(
            history_pb2.ListMessagesRequest(agent_id=created.agent.id, page_size=1000)
        )
        window = await messages.GetContextWindow(
            history_pb2.GetContextWindowRequest(agent_id=created.agent.id)
        )

    users = [m for m in page.messages if m.WhichOneof("content") == "user"]
    assert len(users) == 40
    events = [m.event for m in page.messages if m.WhichOneof("content") == "event"]
    assert any(e.type == message_pb2.EVENT_TYPE_TRUNCATION and "summarizer failed" in e.text for e in events)
    assert window.messages[0].event.type == message_pb2.EVENT_TYPE_TRUNCATION
    assert len(window.messages) < len(page.messages)
