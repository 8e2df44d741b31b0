"""Sleep-time agents: background agents that share a primary agent's blocks and reorganise them between turns.

Two things have them: an agent created with `sleeptime.enabled` (one sleep-time agent of its own), and a
sleep-time group (its manager agent is the primary, its members the memory agents). After every
`frequency` completed turns of the primary (counted in the runs table, so restarts and replicas keep the
rhythm), each memory agent gets the primary's recent conversation as one message and runs a normal turn
with the memory tools, as a background run: the user's turn has already returned. The run's key names
the primary's count, so a trigger seen twice (two replicas, a retry) starts it once, and a restart
resumes it like every background run. Its edits land in the shared blocks, so the primary sees them on
its next step. A failure is logged, never surfaced to the primary's caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

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
        self.default_frequency = max(1, default_frequency)
        # Completed turns per rhythm when this process last looked; one lock keeps the checks in order.
        self._seen: dict[str, int] = {}
        self._counting = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def after_turn(self, actor: Actor, agent: Agent, result: TurnResult) -> None:
        """Starts an agent's own sleep-time agent when it is due (never blocks the primary's turn)."""
        if agent.sleeptime_agent_id:
            frequency = int((agent.sleeptime or {}).get("frequency") or self.default_frequency)
            self.schedule(actor, agent.id, agent.id, [agent.sleeptime_agent_id], frequency)

    def schedule(
        self, actor: Actor, rhythm: str, primary_id: str, helper_ids: Sequence[str], frequency: int
    ) -> None:
        """Starts the memory agents `helper_ids` of `primary_id` when its turns make them due; `rhythm`
        names the count (one per primary agent, one per sleep-time group)."""
        task = asyncio.create_task(self._when_due(actor, rhythm, primary_id, list(helper_ids), frequency))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _when_due(
        self, actor: Actor, rhythm: str, primary_id: str, helper_ids: list[str], frequency: int
    ) -> None:
        frequency = max(1, frequency)
        try:
            async with self._counting:
                count = await self._runs.completed_count(primary_id)
                # First look after a start: only this turn is new. Several turns may have completed since
                # the last look: a multiple of `frequency` passed in between still counts.
                seen = self._seen.get(rhythm, count - 1)
                self._seen[rhythm] = count
        except Exception:
            log.exception("counting the turns of %s failed", primary_id)
            return
        if count // frequency > seen // frequency:
            await self._reorganise(actor, rhythm, primary_id, helper_ids, count // frequency * frequency)

    async def _reorganise(
        self, actor: Actor, rhythm: str, primary_id: str, helper_ids: list[str], due_at: int
    ) -> None:
        with acting_as(actor):
            try:
                window = await self._mesh.messages.GetContextWindow(
                    history_pb2.GetContextWindowRequest(agent_id=primary_id)
                )
                text = clip_middle(transcript(window.messages), TRANSCRIPT_CHARS)
                message = message_pb2.Message(
                    user=message_pb2.UserContent(
                        text=(
                            "Recent conversation of your primary agent (what is still in its context):"
                            f"\n\n{text}\n\nReorganise the shared memory now."
                        ),
                        name="sleeptime",
                    )
                )
                for helper_id in helper_ids:
                    key = f"sleeptime:{rhythm}:{due_at}"
                    await self._turns.send_async(
                        actor, TurnRequest(helper_id, [message], idempotency_key=key)
                    )
            except MnemoError as exc:
                log.warning("sleep-time agents of %s failed: %s", primary_id, exc.message)
            except Exception:
                log.exception("sleep-time agents of %s failed", primary_id)

    async def aclose(self) -> None:
        """Stops sleep-time work in progress (background runs already recorded resume at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
