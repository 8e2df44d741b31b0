"""Sleep-time agents: a background agent shares its primary's blocks and reorganises them between turns.

After every `frequency` completed turns of the primary (counted in the runs table, so restarts and
replicas keep the rhythm), the sleep-time agent gets
the primary's recent conversation as one message and runs a normal turn of its own, with the memory
tools, in the background: the user's turn has already returned. Its edits land in the shared blocks,
so the primary sees them on its next step. Work for one sleep-time agent never overlaps (its own
per-agent lock), and a failure is logged, never surfaced to the primary's caller.
"""

from __future__ import annotations

import asyncio
import logging

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_agent.context_window import clip_middle, transcript
from mnemo_agent.mesh import Mesh
from mnemo_agent.runs import Runs
from mnemo_agent.store import Agent
from mnemo_agent.turn import TurnRequest, TurnResult, Turns
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import MnemoError

log = logging.getLogger(__name__)

TRANSCRIPT_CHARS = 40_000


class Sleeptime:
    """Triggers sleep-time agents after their primaries' turns."""

    def __init__(self, turns: Turns, runs: Runs, mesh: Mesh, *, default_frequency: int) -> None:
        self._turns = turns
        self._runs = runs
        self._mesh = mesh
        self._default_frequency = max(1, default_frequency)
        # Completed turns per primary when this process last looked; one lock keeps the checks in order.
        self._seen: dict[str, int] = {}
        self._counting = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def after_turn(self, actor: Actor, agent: Agent, result: TurnResult) -> None:
        """Starts the primary's sleep-time agent when it is due (never blocks the primary's turn)."""
        if agent.sleeptime_agent_id:
            task = asyncio.create_task(self._when_due(actor, agent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _when_due(self, actor: Actor, agent: Agent) -> None:
        frequency = int((agent.sleeptime or {}).get("frequency") or self._default_frequency)
        try:
            async with self._counting:
                count = await self._runs.completed_count(agent.id)
                # First look after a start: only this turn is new. Several turns may have completed since
                # the last look: a multiple of `frequency` passed in between still counts.
                seen = self._seen.get(agent.id, count - 1)
                self._seen[agent.id] = count
        except Exception:
            log.exception("counting the turns of %s failed", agent.id)
            return
        if count // frequency > seen // frequency:
            await self._reorganise(actor, agent, frequency)

    async def _reorganise(self, actor: Actor, agent: Agent, turns: int) -> None:
        assert agent.sleeptime_agent_id is not None
        with acting_as(actor):
            try:
                window = await self._mesh.messages.GetContextWindow(
                    history_pb2.GetContextWindowRequest(agent_id=agent.id)
                )
                text = clip_middle(transcript(window.messages), TRANSCRIPT_CHARS)
                message = message_pb2.Message(
                    user=message_pb2.UserContent(
                        text=(
                            f"Recent conversation of your primary agent (its last {turns} turns and what is "
                            f"still in its context):\n\n{text}\n\nReorganise the shared memory now."
                        ),
                        name="sleeptime",
                    )
                )
                await self._turns.send(actor, TurnRequest(agent.sleeptime_agent_id, [message]))
            except MnemoError as exc:
                log.warning("sleep-time agent of %s failed: %s", agent.id, exc.message)
            except Exception:
                log.exception("sleep-time agent of %s failed", agent.id)

    async def aclose(self) -> None:
        """Stops sleep-time work in progress."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
