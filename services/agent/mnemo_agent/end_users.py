"""End users of an application (REST: identities): their agents, and blocks shared by all their agents.

An end user is known by the application's own id for it (`identifier_key`, unique in the organization).
Its agents and blocks are kept here; the blocks themselves live in the memory service, where each is
attached to every agent of the end user (as shared blocks are), so a fact one agent writes there, every
agent of that end user sees on its next step.

Giving an end user an agent or a block attaches the blocks in the memory service first and records the
link here second; if an attach fails (a label already taken in an agent), the attaches made so far are
undone and nothing is recorded. Taking an agent or a block away detaches first and forgets second, so a
retry finishes what a failure left; a block also reached through another of the agent's end users stays.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from mnemo.memory.v1 import block_pb2
from mnemo_agent.agents import Agents
from mnemo_agent.end_user_store import EndUser, EndUserQueries
from mnemo_agent.mesh import Mesh
from mnemo_core.db import Database
from mnemo_core.errors import AlreadyExists, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow

END_USER_TYPES = ("user", "org", "other")
UPDATABLE_FIELDS = frozenset({"identifier_key", "name", "type", "properties"})
MAX_PROPERTIES_BYTES = 64 * 1024
MAX_MEMBERS = 1000


@dataclass(frozen=True, slots=True)
class EndUserSpec:
    """An end user as the application describes it."""

    identifier_key: str
    name: str = ""
    type: str = "user"
    properties: dict[str, Any] = field(default_factory=dict)


def _check(values: dict[str, Any], prefix: str = "end_user.") -> None:
    if "identifier_key" in values:
        check_text(values["identifier_key"], f"{prefix}identifier_key", max_chars=256, allow_empty=False)
    if "name" in values:
        check_text(values["name"], f"{prefix}name", max_chars=200)
    if values.get("type", "user") not in END_USER_TYPES:
        raise invalid(f"{prefix}type", f"must be one of {', '.join(END_USER_TYPES)}")
    if len(json.dumps(values.get("properties", {}))) > MAX_PROPERTIES_BYTES:
        raise invalid(f"{prefix}properties", f"at most {MAX_PROPERTIES_BYTES} bytes as JSON")


def _not_found(end_user_id: str) -> NotFound:
    return NotFound(
        f"identity {end_user_id} not found",
        reason="IDENTITY_NOT_FOUND",
        metadata={"identity_id": end_user_id},
    )


def _key_taken(identifier_key: str, holder: str) -> AlreadyExists:
    return AlreadyExists(
        f"an identity with identifier_key '{identifier_key}' exists ({holder})",
        reason="IDENTITY_KEY_TAKEN",
        metadata={"identifier_key": identifier_key, "identity_id": holder},
    )


class EndUsers:
    """End users of one organization at a time (the org comes with every call)."""

    def __init__(self, db: Database, mesh: Mesh, agents: Agents) -> None:
        self._db = db
        self._blocks = mesh.blocks
        self._agents = agents

    async def create(
        self, org_id: str, spec: EndUserSpec, *, agent_ids: Sequence[str] = (), block_ids: Sequence[str] = ()
    ) -> EndUser:
        """Creates an end user with its agents and blocks (all attached), or nothing."""
        values = dataclasses.asdict(spec)
        _check(values)
        agents = self._distinct(agent_ids, "agent_ids")
        blocks = self._distinct(block_ids, "block_ids")
        for agent_id in agents:
            await self._agents.row(org_id, agent_id)
        for block_id in blocks:
            await self._block(block_id)
        now = utcnow()
        end_user = EndUser(id=new_id("identity"), org_id=org_id, created_at=now, updated_at=now, **values)

        def tx(conn: Connection) -> EndUser:
            holder = EndUserQueries.key_taken(conn, org_id, spec.identifier_key)
            if holder is not None:
                raise _key_taken(spec.identifier_key, holder)
            EndUserQueries.insert(conn, end_user)
            return end_user

        def members(conn: Connection) -> None:
            for agent_id in agents:
                EndUserQueries.add_agent(conn, org_id, end_user.id, agent_id, now)
            for block_id in blocks:
                EndUserQueries.add_block(conn, org_id, end_user.id, block_id, now)

        await self._db.write(tx)
        try:
            await self._link(agents, blocks)
            try:
                await self._db.write(members)
            except BaseException:
                for agent_id in agents:
                    await self._unlink(org_id, end_user.id, agent_id, blocks)
                raise
        except BaseException:
            await self._db.write(EndUserQueries.delete, org_id, end_user.id)
            raise
        return await self.get(org_id, end_user.id)

    async def get(self, org_id: str, end_user_id: str) -> EndUser:
        """One end user; NOT_FOUND when it is not the organization's."""
        require_id(end_user_id, "identity_id")
        found = await self._db.read(EndUserQueries.get, org_id, end_user_id)
        if found is None:
            raise _not_found(end_user_id)
        return found

    async def list(
        self,
        org_id: str,
        *,
        identifier_key: str = "",
        type: str = "",
        agent_id: str = "",
        size: int = 0,
        token: str = "",
    ) -> tuple[list[EndUser], str]:
        """End users, newest first, optionally by identifier_key, type or agent; returns (page, next token)."""
        if type and type not in END_USER_TYPES:
            raise invalid("type", f"must be one of {', '.join(END_USER_TYPES)}")
        limit = page_size(size)
        position = decode_token(token, "identities")
        after = None if position is None else (position.time("t"), position.text("i"))
        found = await self._db.read(
            lambda conn: EndUserQueries.page(
                conn,
                org_id,
                identifier_key=identifier_key,
                type=type,
                agent_id=agent_id,
                after=after,
                limit=limit + 1,
            )
        )
        if len(found) > limit:
            found = found[:limit]
            return found, encode_token("identities", t=found[-1].created_at.isoformat(), i=found[-1].id)
        return found, ""

    async def update(self, org_id: str, end_user_id: str, changes: dict[str, Any]) -> EndUser:
        """Changes the given fields (identifier_key, name, type, properties)."""
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise invalid("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        _check(changes)
        require_id(end_user_id, "identity_id")

        def tx(conn: Connection) -> None:
            if EndUserQueries.get(conn, org_id, end_user_id) is None:
                raise _not_found(end_user_id)
            key = changes.get("identifier_key")
            holder = EndUserQueries.key_taken(conn, org_id, key, other_than=end_user_id) if key else None
            if key and holder is not None:
                raise _key_taken(key, holder)
            EndUserQueries.update(conn, org_id, end_user_id, {**changes, "updated_at": utcnow()})

        await self._db.write(tx)
        return await self.get(org_id, end_user_id)

    async def delete(self, org_id: str, end_user_id: str) -> None:
        """Deletes an end user; its blocks leave its agents (both stay)."""
        end_user = await self.get(org_id, end_user_id)
        for agent_id in end_user.agent_ids:
            await self._unlink(org_id, end_user.id, agent_id, end_user.block_ids)
        await self._db.write(EndUserQueries.delete, org_id, end_user.id)

    async def attach_agent(self, org_id: str, end_user_id: str, agent_id: str) -> EndUser:
        """Gives the end user an agent, which gets the end user's blocks; attaching again changes nothing."""
        end_user = await self.get(org_id, end_user_id)
        require_id(agent_id, "agent_id")
        await self._agents.row(org_id, agent_id)
        if agent_id in end_user.agent_ids:
            return end_user
        self._room(end_user.agent_ids, "agents")
        stale = await self._link([agent_id], end_user.block_ids)

        def tx(conn: Connection) -> None:
            EndUserQueries.add_agent(conn, org_id, end_user.id, agent_id, utcnow())
            for block_id in stale:
                EndUserQueries.remove_block(conn, end_user.id, block_id)

        await self._db.write(tx)
        return await self.get(org_id, end_user_id)

    async def detach_agent(self, org_id: str, end_user_id: str, agent_id: str) -> EndUser:
        """Takes an agent from the end user (its blocks leave the agent); a missing one changes nothing."""
        end_user = await self.get(org_id, end_user_id)
        require_id(agent_id, "agent_id")
        if agent_id in end_user.agent_ids:
            await self._unlink(org_id, end_user.id, agent_id, end_user.block_ids)
            await self._db.write(EndUserQueries.remove_agent, end_user.id, agent_id)
        return await self.get(org_id, end_user_id)

    async def attach_block(self, org_id: str, end_user_id: str, block_id: str) -> EndUser:
        """Gives the end user a block, attached to each of its agents; attaching again changes nothing."""
        end_user = await self.get(org_id, end_user_id)
        require_id(block_id, "block_id")
        await self._block(block_id)
        if block_id in end_user.block_ids:
            return end_user
        self._room(end_user.block_ids, "blocks")
        await self._link(end_user.agent_ids, [block_id])
        await self._db.write(EndUserQueries.add_block, org_id, end_user.id, block_id, utcnow())
        return await self.get(org_id, end_user_id)

    async def detach_block(self, org_id: str, end_user_id: str, block_id: str) -> EndUser:
        """Takes a block from the end user (it leaves its agents; the block stays); a missing one changes
        nothing."""
        end_user = await self.get(org_id, end_user_id)
        require_id(block_id, "block_id")
        if block_id in end_user.block_ids:
            for agent_id in end_user.agent_ids:
                await self._unlink(org_id, end_user.id, agent_id, [block_id])
            await self._db.write(EndUserQueries.remove_block, end_user.id, block_id)
        return await self.get(org_id, end_user_id)

    # ----- the memory service's attachments -----

    async def _block(self, block_id: str) -> block_pb2.Block:
        """The block, if the organization has it (NOT_FOUND otherwise)."""
        require_id(block_id, "block_id")
        return (await self._blocks.GetBlock(block_pb2.GetBlockRequest(block_id=block_id))).block

    async def _link(self, agent_ids: Iterable[str], block_ids: Sequence[str]) -> builtins.list[str]:
        """Attaches every block to every agent (all or none); returns the blocks that no longer exist."""
        attached: list[tuple[str, str]] = []
        stale: list[str] = []
        try:
            for agent_id in agent_ids:
                found = await self._blocks.ListBlocks(
                    block_pb2.ListBlocksRequest(agent_id=agent_id, page_size=1000)
                )
                present = {block.id for block in found.blocks}
                for block_id in block_ids:
                    if block_id in present or block_id in stale:
                        continue
                    try:
                        await self._blocks.AttachBlock(
                            block_pb2.AttachBlockRequest(block_id=block_id, agent_id=agent_id)
                        )
                    except NotFound as exc:
                        if exc.reason != "BLOCK_NOT_FOUND":
                            raise
                        stale.append(block_id)  # deleted in the memory service since it was given
                        continue
                    attached.append((agent_id, block_id))
        except BaseException:
            for agent_id, block_id in attached:
                with contextlib.suppress(NotFound):
                    await self._blocks.DetachBlock(
                        block_pb2.DetachBlockRequest(block_id=block_id, agent_id=agent_id)
                    )
            raise
        return stale

    async def _unlink(self, org_id: str, end_user_id: str, agent_id: str, block_ids: Sequence[str]) -> None:
        """Detaches the end user's blocks from one of its agents, except those another of its end users has."""
        kept = await self._db.read(
            lambda conn: EndUserQueries.blocks_of_agent(conn, org_id, agent_id, except_end_user=end_user_id)
        )
        for block_id in block_ids:
            if block_id not in kept:
                with contextlib.suppress(NotFound):  # detached or deleted already
                    await self._blocks.DetachBlock(
                        block_pb2.DetachBlockRequest(block_id=block_id, agent_id=agent_id)
                    )

    @staticmethod
    def _distinct(ids: Sequence[str], field_name: str) -> builtins.list[str]:
        if len(set(ids)) != len(ids):
            raise invalid(field_name, "must not repeat an id")
        if len(ids) > MAX_MEMBERS:
            raise invalid(field_name, f"at most {MAX_MEMBERS}")
        for i, value in enumerate(ids):
            require_id(value, f"{field_name}[{i}]")
        return list(ids)

    @staticmethod
    def _room(members: Sequence[str], what: str) -> None:
        if len(members) >= MAX_MEMBERS:
            raise invalid(f"{what[:-1]}_id", f"an identity has at most {MAX_MEMBERS} {what}")
