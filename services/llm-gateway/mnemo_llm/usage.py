"""The usage ledger: tokens spent per organization, agent and model, persisted in the gateway's schema.

Calls are recorded in memory and written in batches (every `flush_interval` seconds, at shutdown, and
before any query), so that a model call never waits for a database write. A crash loses at most the
last interval's entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from mnemo.llm.v1 import llm_pb2
from mnemo_core.actor import current_actor_or_none
from mnemo_core.db import Database
from mnemo_core.wire import utcnow
from mnemo_llm.providers import usage
from mnemo_llm.store import UsageFilter, UsageQueries

log = logging.getLogger(__name__)

# Entries written at once at most; a longer backlog takes several transactions.
_BATCH = 500


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One model call's tokens."""

    org_id: str
    user_id: str
    agent_id: str
    model: str
    operation: str
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Which entries to sum, and how to group them."""

    org_id: str
    group_by: tuple[int, ...] = ()
    agent_id: str = ""
    model: str = ""
    start: datetime | None = None
    end: datetime | None = None


class UsageLedger:
    """Records model calls and sums them on request."""

    def __init__(self, db: Database, *, flush_interval: float = 0.5) -> None:
        self._db = db
        self._interval = flush_interval
        self._pending: list[UsageEntry] = []
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def record(self, model: str, operation: str, agent_id: str, prompt: int, completion: int) -> None:
        """Notes one call made for the current actor; written with the next flush."""
        actor = current_actor_or_none()
        if actor is None:
            return
        self._pending.append(
            UsageEntry(actor.org_id, actor.user_id, agent_id, model, operation, prompt, completion, utcnow())
        )
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("writing the usage ledger failed; will retry")

    async def flush(self) -> None:
        """Writes every pending entry."""
        async with self._flush_lock:
            while self._pending:
                batch = self._pending[:_BATCH]
                rows = [
                    {
                        "org_id": e.org_id,
                        "user_id": e.user_id,
                        "agent_id": e.agent_id,
                        "model": e.model,
                        "operation": e.operation,
                        "prompt_tokens": e.prompt_tokens,
                        "completion_tokens": e.completion_tokens,
                        "created_at": e.created_at,
                        "day": e.created_at.astimezone(UTC).strftime("%Y-%m-%d"),
                    }
                    for e in batch
                ]
                await self._db.write(UsageQueries.insert, rows)
                # Only once written: a failed write keeps the batch for the next flush.
                del self._pending[: len(batch)]

    async def summarize(self, query: UsageQuery) -> list[llm_pb2.UsageSummary]:
        """Sums of the organization's entries matching `query`, one row per group."""
        await self.flush()
        columns = {
            llm_pb2.USAGE_DIMENSION_AGENT: "agent_id",
            llm_pb2.USAGE_DIMENSION_MODEL: "model",
            llm_pb2.USAGE_DIMENSION_DAY: "day",
        }
        where = UsageFilter(
            org_id=query.org_id,
            group_by=[columns[llm_pb2.UsageDimension.ValueType(d)] for d in query.group_by],
            agent_id=query.agent_id,
            model=query.model,
            start=query.start,
            end=query.end,
        )
        summaries = []
        for keys, count, prompt, completion in await self._db.read(UsageQueries.sums, where):
            if not count:
                continue
            summaries.append(
                llm_pb2.UsageSummary(
                    agent_id=keys.get("agent_id", ""),
                    model=keys.get("model", ""),
                    day=keys.get("day", ""),
                    request_count=int(count),
                    usage=usage(int(prompt), int(completion)),
                )
            )
        return summaries

    async def aclose(self) -> None:
        """Stops the periodic writer and writes what is pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("writing the usage ledger at shutdown failed; %d entries lost", len(self._pending))
