"""A streaming handler abandoned by its client is closed from another context without an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from mnemo_core.actor import Actor, acting_as, current_actor_or_none


async def test_a_generator_holding_the_actor_can_be_closed_from_another_task() -> None:
    seen: list[str] = []

    async def handler() -> AsyncIterator[int]:
        with acting_as(Actor("org-1", "user-1")):
            actor = current_actor_or_none()
            assert actor is not None
            seen.append(actor.org_id)
            yield 1
            yield 2

    stream = handler()
    # The server steps the stream in the RPC's task, and closes an abandoned one from another task.
    assert await asyncio.create_task(anext(stream)) == 1
    await asyncio.create_task(stream.aclose())

    assert seen == ["org-1"]
    assert current_actor_or_none() is None
