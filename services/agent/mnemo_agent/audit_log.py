"""The audit log: who may read it, how recorded events are kept, and their retention."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from datetime import timedelta

from mnemo_agent.audit_store import AuditFilter, AuditQueries
from mnemo_core.actor import Actor
from mnemo_core.audit import AuditEvent
from mnemo_core.db import Database
from mnemo_core.errors import NotFound, PermissionDenied
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)
MAX_BATCH = 1000


class AuditLog:
    """Records events (from the gateway, the services and this one) and lists them to admins."""

    def __init__(self, db: Database, *, retention_days: float, prune_seconds: float = 3600.0) -> None:
        self._db = db
        self._retention = timedelta(days=retention_days)
        self._prune_seconds = prune_seconds
        self._pruner: asyncio.Task[None] | None = None

    async def record(self, events: Sequence[AuditEvent]) -> None:
        """Stores events; those without an id get one."""
        kept = [e if e.id else dataclasses.replace(e, id=new_id("audit")) for e in events]
        for start in range(0, len(kept), MAX_BATCH):
            await self._db.write(AuditQueries.insert, kept[start : start + MAX_BATCH])

    async def record_as(self, actor: Actor, events: Sequence[AuditEvent]) -> None:
        """Stores events sent by another part of the mesh (root only: events name any organization)."""
        if not actor.is_root:
            raise PermissionDenied("only the mesh records audit events", reason="ROOT_ROLE_REQUIRED")
        await self.record(events)

    async def list_page(
        self, actor: Actor, keep: AuditFilter, *, size: int = 0, token: str = ""
    ) -> tuple[list[AuditEvent], str]:
        """A page of an organization's events, newest first (its admins, or root)."""
        if not actor.is_admin:
            raise PermissionDenied("only an admin key reads the audit log", reason="ADMIN_ROLE_REQUIRED")
        org_id = require_id(keep.org_id, "org_id") if keep.org_id else actor.org_id
        if org_id != actor.org_id and not actor.is_root:
            raise NotFound(f"organization {org_id} not found", reason="ORGANIZATION_NOT_FOUND")
        keep = dataclasses.replace(keep, org_id=org_id)
        limit = page_size(size)
        listing = f"audit:{org_id}"
        position = decode_token(token, listing)
        before = None if position is None else (position.time("t"), position.text("i"))
        rows = await self._db.read(lambda conn: AuditQueries.page(conn, keep, before=before, limit=limit + 1))
        if len(rows) <= limit:
            return rows, ""
        rows = rows[:limit]
        return rows, encode_token(listing, t=rows[-1].time.isoformat(), i=rows[-1].id)

    async def prune(self) -> int:
        """Deletes the events older than the retention; returns how many."""
        return await self._db.write(AuditQueries.prune, utcnow() - self._retention)

    def start_pruning(self) -> None:
        """Prunes now and then every `prune_seconds`, in the background."""
        if self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_forever())

    async def _prune_forever(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("pruned %d audit events past their retention", pruned)
            except Exception:
                log.exception("pruning the audit log failed; will try again")
            await asyncio.sleep(self._prune_seconds)

    async def aclose(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
