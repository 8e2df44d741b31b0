"""Sandbox slots shared fairly between organizations.

Each organization holds at most `per_org` slots at once, and when a slot frees up, the organizations
that wait take turns (the one served longest ago first), so one organization's burst of runs, or its
runs that last until their timeout, never keeps another organization's runs from starting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque

from mnemo_core.errors import ResourceExhausted


class FairSlots:
    """Numbered slots (0 .. total-1), acquired per organization."""

    def __init__(self, total: int, *, per_org: int, max_waiting_per_org: int) -> None:
        self._free: deque[int] = deque(range(total))
        self._per_org = max(1, min(per_org, total))
        self._max_waiting = max_waiting_per_org
        self._held: Counter[str] = Counter()
        # Organizations with waiters, in the order they get the next free slot.
        self._waiting: dict[str, deque[asyncio.Future[int]]] = {}

    def held(self, org_id: str) -> int:
        """Slots the organization holds now."""
        return self._held[org_id]

    async def acquire(self, org_id: str) -> int:
        """A slot for one of the organization's runs; RESOURCE_EXHAUSTED when too many already wait."""
        if self._free and self._held[org_id] < self._per_org and org_id not in self._waiting:
            return self._take(org_id)
        queue = self._waiting.setdefault(org_id, deque())
        if len(queue) >= self._max_waiting:
            if not queue:
                del self._waiting[org_id]
            raise ResourceExhausted(
                f"this organization already has {self._max_waiting} tool runs waiting for the sandbox; "
                "retry when some have finished",
                reason="SANDBOX_BUSY",
            )
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(org_id, waiter.result())
            else:
                self._forget(org_id, waiter)
            raise

    def release(self, org_id: str, slot: int) -> None:
        """Gives the slot back and hands free slots to the next organizations in turn."""
        self._held[org_id] -= 1
        if self._held[org_id] <= 0:
            del self._held[org_id]
        self._free.append(slot)
        self._dispatch()

    def _take(self, org_id: str) -> int:
        self._held[org_id] += 1
        return self._free.popleft()

    def _dispatch(self) -> None:
        while self._free:
            org_id = next((org for org in self._waiting if self._held[org] < self._per_org), None)
            if org_id is None:
                return
            queue = self._waiting.pop(org_id)
            waiter = queue.popleft()
            if queue:
                self._waiting[org_id] = queue  # to the back of the line
            if not waiter.done():  # a cancelled waiter leaves its queue on its own
                waiter.set_result(self._take(org_id))

    def _forget(self, org_id: str, waiter: asyncio.Future[int]) -> None:
        queue = self._waiting.get(org_id)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._waiting[org_id]
