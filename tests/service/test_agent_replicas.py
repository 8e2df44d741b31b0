"""Two replicas of the agent service on one Postgres never interleave the turns of an agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc, run_pb2, run_pb2_grpc
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.memory.v1 import message_pb2_grpc
from mnemo_agent.app import build as build_agent
from mnemo_agent.settings import AgentSettings
from mnemo_core.actor import acting_as
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.service.conftest import Served, clean_environment, new_actor, serving
from tests.service.test_runs_lease import postgres_url  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
async def replicas(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,  # noqa: F811
    memory_service: Served,
    tools_service: Served,
    llm_service: Served,
) -> AsyncIterator[tuple[Served, Served]]:
    served = []
    async with AsyncExitStack() as stack:
        for name in ("a", "b"):
            home = tmp_path_factory.mktemp(f"replica-{name}")
            with clean_environment(home):
                settings = AgentSettings(
                    home=home,
                    database_url=postgres_url,
                    memory_addr=memory_service.address,
                    tools_addr=tools_service.address,
                    llm_addr=llm_service.address,
                )
            served.append(await stack.enter_async_context(serving(await build_agent(settings))))
        yield served[0], served[1]


def user(text: str) -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text))


async def test_a_turn_on_one_replica_waits_for_the_agents_turn_on_the_other(
    replicas: tuple[Served, Served], memory_service: Served, llm: FakeProvider
) -> None:
    first, second = (r.stub(agent_pb2_grpc.AgentServiceStub) for r in replicas)
    with acting_as(new_actor()):
        created = await first.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="shared", model="openai/m"),
                memory_blocks=[{"label": "human", "value": ""}],
            )
        )
        agent_id = created.agent.id
        llm.script(
            tool_call("core_memory_append", {"label": "human", "content": "from A"}),
            reply("A is done", delay=1.0),
            reply("B is done"),
        )
        on_first = asyncio.ensure_future(
            first.SendMessage(agent_pb2.SendMessageRequest(agent_id=agent_id, messages=[user("via A")]))
        )
        for _ in range(500):  # A holds the agent once its first model call is out
            if llm.requests():
                break
            await asyncio.sleep(0.01)
        on_second = asyncio.ensure_future(
            second.SendMessage(agent_pb2.SendMessageRequest(agent_id=agent_id, messages=[user("via B")]))
        )
        a, b = await asyncio.gather(on_first, on_second)
        history = await memory_service.stub(message_pb2_grpc.MessageServiceStub).ListMessages(
            history_pb2.ListMessagesRequest(agent_id=agent_id, page_size=100)
        )
        runs = replicas[1].stub(run_pb2_grpc.RunServiceStub)
        run_a = (await runs.GetRun(run_pb2.GetRunRequest(run_id=a.run_id))).run
        run_b = (await runs.GetRun(run_pb2.GetRunRequest(run_id=b.run_id))).run

    assert (a.stop_reason, b.stop_reason) == (turn_pb2.STOP_REASON_END_TURN, turn_pb2.STOP_REASON_END_TURN)
    assert [m.WhichOneof("content") for m in history.messages] == [
        "user",
        "tool_call",
        "tool_return",
        "assistant",
        "user",
        "assistant",
    ]
    assert [m.run_id for m in history.messages] == [a.run_id] * 4 + [b.run_id] * 2
    assert history.messages[-1].assistant.text == "B is done"
    # B's run was recorded only once A's had finished.
    assert run_b.create_time.ToDatetime() >= run_a.complete_time.ToDatetime()


async def test_a_cancel_sent_to_the_other_replica_stops_the_turn(
    replicas: tuple[Served, Served], llm: FakeProvider
) -> None:
    first = replicas[0].stub(agent_pb2_grpc.AgentServiceStub)
    runs_on_second = replicas[1].stub(run_pb2_grpc.RunServiceStub)
    with acting_as(new_actor()):
        created = await first.CreateAgent(
            agent_pb2.CreateAgentRequest(agent=agent_pb2.Agent(name="cancelled", model="openai/m"))
        )
        llm.script(reply("too late", delay=8.0))
        turn = asyncio.ensure_future(
            first.SendMessage(agent_pb2.SendMessageRequest(agent_id=created.agent.id, messages=[user("go")]))
        )
        run_id = ""
        for _ in range(500):  # the run exists once the model call is out
            listed = await runs_on_second.ListRuns(run_pb2.ListRunsRequest(agent_id=created.agent.id))
            if listed.runs and llm.requests():
                run_id = listed.runs[0].id
                break
            await asyncio.sleep(0.01)

        cancelled = await runs_on_second.CancelRun(run_pb2.CancelRunRequest(run_id=run_id))
        result = await turn

    # The replica holding the turn saw the request and stopped it before the model answered.
    assert cancelled.run.status == run_pb2.RUN_STATUS_CANCELLED
    assert result.stop_reason == turn_pb2.STOP_REASON_CANCELLED
