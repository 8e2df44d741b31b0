"""Sandbox slots are shared fairly: a per-organization cap, turns between waiting organizations, a bounded queue."""

from __future__ import annotations

import asyncio

import pytest

from mnemo_core.errors import ResourceExhausted
from mnemo_tools.sandbox.slots import FairSlots


async def test_an_organization_at_its_cap_waits_while_another_gets_a_slot_at_once() -> None:
    slots = FairSlots(4, per_org=2, max_waiting_per_org=10)
    held = [await slots.acquire("busy") for _ in range(2)]
    third = asyncio.ensure_future(slots.acquire("busy"))
    await asyncio.sleep(0)

    other = await slots.acquire("quiet")

    assert not third.done()
    assert len({*held, other}) == 3
    slots.release("busy", held[0])
    assert await third not in (held[1], other)
    assert slots.held("busy") == 2


async def test_waiting_organizations_take_turns_for_freed_slots() -> None:
    slots = FairSlots(2, per_org=2, max_waiting_per_org=10)
    first, second = await slots.acquire("a"), await slots.acquire("a")
    waiting = [asyncio.ensure_future(slots.acquire(org)) for org in ("a", "a", "a", "b")]
    await asyncio.sleep(0)

    slots.release("a", first)
    await asyncio.sleep(0)
    slots.release("a", second)
    await asyncio.sleep(0)

    # One freed slot went to the queue of "a" (first in line), the next to "b", not to a's second waiter.
    assert [w.done() for w in waiting] == [True, False, False, True]
    for task in waiting[1:3]:
        task.cancel()


async def test_too_many_waiting_runs_of_one_organization_are_refused() -> None:
    slots = FairSlots(1, per_org=1, max_waiting_per_org=2)
    await slots.acquire("a")
    waiting = [asyncio.ensure_future(slots.acquire("a")) for _ in range(2)]
    await asyncio.sleep(0)

    with pytest.raises(ResourceExhausted) as refused:
        await slots.acquire("a")

    assert refused.value.reason == "SANDBOX_BUSY"
    for task in waiting:
        task.cancel()


async def test_a_cancelled_waiter_holds_nothing() -> None:
    slots = FairSlots(1, per_org=1, max_waiting_per_org=5)
    slot = await slots.acquire("a")
    waiter = asyncio.ensure_future(slots.acquire("b"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)

    slots.release("a", slot)

    assert slots.held("b") == 0
    assert await slots.acquire("c") == slot
