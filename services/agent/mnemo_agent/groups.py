"""Groups: agents of one organization that answer together, and the blocks they share.

Creating a group checks that every agent is the caller's organization's, creates the group's own shared
blocks, attaches the shared blocks to every agent (and, in a sleep-time group, the manager's blocks to
its memory agents), then writes the group with its members, in one transaction. If a step fails, what
was attached is detached and what was created is deleted again, so a failed create leaves nothing.
Deleting a group undoes the same; its agents stay. An agent in a group cannot be deleted (the group
first): group_members refers to it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from mnemo.memory.v1 import block_pb2
from mnemo_agent.group_managers import (
    DEFAULT_DYNAMIC_TURNS,
    DEFAULT_TERMINATION_TOKEN,
    DYNAMIC,
    MANAGER_TYPES,
    ROUND_ROBIN,
    SLEEPTIME,
)
from mnemo_agent.group_store import Group, GroupQueries
from mnemo_agent.mesh import Mesh
from mnemo_agent.store import AgentQueries
from mnemo_core.actor import Actor
from mnemo_core.db import Database
from mnemo_core.errors import MnemoError, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow

MAX_MEMBERS = 50
MAX_SHARED_BLOCKS = 20


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A group as a caller gives it."""

    name: str
    manager_type: str = ROUND_ROBIN
    agent_ids: list[str] = field(default_factory=list)
    description: str = ""
    manager_agent_id: str = ""
    max_turns: int = 0
    termination_token: str = ""
    sleeptime_frequency: int = 0
    shared_block_ids: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def not_found(group_id: str) -> NotFound:
    """The error for a group the caller cannot see."""
    return NotFound(f"group {group_id} not found", reason="GROUP_NOT_FOUND", metadata={"group_id": group_id})


def max_turns_of(group: Group, requested: int, limit: int) -> int:
    """The member turns one message to the group may take: the request's, else the group's, else the
    policy's default, within the service limit."""
    if not 0 <= requested <= limit:
        raise invalid("max_turns", f"must be between 0 and {limit}")
    default = len(group.agent_ids) if group.manager_type == ROUND_ROBIN else DEFAULT_DYNAMIC_TURNS
    return min(requested or group.max_turns or default, limit)


def termination_token_of(group: Group) -> str:
    """The answer that ends a dynamic group's conversation."""
    return group.termination_token or DEFAULT_TERMINATION_TOKEN


def _check(spec: GroupSpec, max_turns_limit: int, blocks: int) -> None:
    check_text(spec.name, "group.name", max_chars=200, allow_empty=False)
    check_text(spec.description, "group.description", max_chars=10_000)
    if spec.manager_type not in MANAGER_TYPES:
        raise invalid("group.manager.type", f"must be one of {', '.join(MANAGER_TYPES)}")
    if not 1 <= len(spec.agent_ids) <= MAX_MEMBERS:
        raise invalid("group.agent_ids", f"a group has 1 to {MAX_MEMBERS} agents")
    if len(set(spec.agent_ids)) != len(spec.agent_ids):
        raise invalid("group.agent_ids", "must not repeat an agent")
    for i, agent_id in enumerate(spec.agent_ids):
        require_id(agent_id, f"group.agent_ids[{i}]")
    if spec.manager_type == ROUND_ROBIN and spec.manager_agent_id:
        raise invalid("group.manager.manager_agent_id", "a round-robin group has no manager agent")
    if spec.manager_type != ROUND_ROBIN:
        if not spec.manager_agent_id:
            raise invalid(
                "group.manager.manager_agent_id", f"a {spec.manager_type} group needs its manager agent"
            )
        if spec.manager_agent_id in spec.agent_ids:
            raise invalid("group.manager.manager_agent_id", "the manager agent is not one of agent_ids")
    if not 0 <= spec.max_turns <= max_turns_limit:
        raise invalid("group.manager.max_turns", f"must be between 0 and {max_turns_limit}")
    check_text(spec.termination_token, "group.manager.termination_token", max_chars=200)
    if spec.manager_type == DYNAMIC and spec.termination_token and not spec.termination_token.strip():
        raise invalid("group.manager.termination_token", "must not be blank")
    if not 0 <= spec.sleeptime_frequency <= 10_000:
        raise invalid("group.manager.sleeptime_frequency", "must be between 0 and 10000")
    if len(set(spec.shared_block_ids)) != len(spec.shared_block_ids):
        raise invalid("group.shared_block_ids", "must not repeat a block")
    if len(spec.shared_block_ids) + blocks > MAX_SHARED_BLOCKS:
        raise invalid("group.shared_block_ids", f"a group shares at most {MAX_SHARED_BLOCKS} blocks")


class Groups:
    """Groups of one organization at a time."""

    def __init__(self, db: Database, mesh: Mesh, *, max_turns_limit: int) -> None:
        self._db = db
        self._mesh = mesh
        self.max_turns_limit = max_turns_limit

    async def create(self, actor: Actor, spec: GroupSpec, shared_blocks: Sequence[block_pb2.Block]) -> Group:
        """Creates a group of the caller's agents, with its shared blocks, all or nothing."""
        _check(spec, self.max_turns_limit, len(shared_blocks))
        everyone = ([spec.manager_agent_id] if spec.manager_agent_id else []) + list(spec.agent_ids)
        found = await self._db.read(AgentQueries.in_org, actor.org_id, everyone)
        missing = [agent_id for agent_id in everyone if agent_id not in found]
        if missing:
            raise NotFound(
                f"agent {missing[0]} not found", reason="AGENT_NOT_FOUND", metadata={"agent_id": missing[0]}
            )
        owned: list[str] = []
        attachments: list[list[str]] = []
        try:
            for i, block in enumerate(shared_blocks):
                try:
                    created = await self._mesh.blocks.CreateBlock(block_pb2.CreateBlockRequest(block=block))
                except MnemoError as exc:
                    raise invalid(f"shared_blocks[{i}]", exc.message) from None
                owned.append(created.block.id)
            for block_id in [*owned, *spec.shared_block_ids]:
                block = (await self._mesh.blocks.GetBlock(block_pb2.GetBlockRequest(block_id=block_id))).block
                await self._attach(block, everyone, attachments)
            if spec.manager_type == SLEEPTIME:
                # The memory agents work on the manager's own blocks.
                for block in await self._blocks_of(spec.manager_agent_id):
                    if block.id not in owned and block.id not in spec.shared_block_ids:
                        await self._attach(block, spec.agent_ids, attachments)
            group = Group(
                id=new_id("group"),
                org_id=actor.org_id,
                name=spec.name,
                description=spec.description,
                manager_type=spec.manager_type,
                manager_agent_id=spec.manager_agent_id or None,
                agent_ids=list(spec.agent_ids),
                max_turns=spec.max_turns,
                termination_token=spec.termination_token,
                sleeptime_frequency=spec.sleeptime_frequency,
                shared_block_ids=[*owned, *spec.shared_block_ids],
                owned_block_ids=owned,
                attachments=attachments,
                metadata_json=dict(spec.metadata),
                created_at=utcnow(),
            )
            await self._db.write(GroupQueries.insert, group)
        except BaseException:
            await asyncio.shield(self._undo(attachments, owned))
            raise
        return group

    async def _attach(
        self, block: block_pb2.Block, agent_ids: Sequence[str], attachments: list[list[str]]
    ) -> None:
        """Attaches `block` to the agents that do not have it yet, noting each attachment made."""
        for agent_id in agent_ids:
            if agent_id not in block.agent_ids:
                await self._mesh.blocks.AttachBlock(
                    block_pb2.AttachBlockRequest(block_id=block.id, agent_id=agent_id)
                )
                attachments.append([block.id, agent_id])

    async def _blocks_of(self, agent_id: str) -> list[block_pb2.Block]:
        found = await self._mesh.blocks.ListBlocks(
            block_pb2.ListBlocksRequest(agent_id=agent_id, page_size=1000)
        )
        return list(found.blocks)

    async def _undo(self, attachments: Sequence[Sequence[str]], owned: Sequence[str]) -> None:
        """Detaches what a group attached and deletes the blocks it created (each step idempotent)."""
        for block_id, agent_id in attachments:
            if block_id not in owned:
                with contextlib.suppress(NotFound):
                    await self._mesh.blocks.DetachBlock(
                        block_pb2.DetachBlockRequest(block_id=block_id, agent_id=agent_id)
                    )
        for block_id in owned:
            with contextlib.suppress(NotFound):
                await self._mesh.blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=block_id))

    async def get(self, org_id: str, group_id: str) -> Group:
        """One group of the organization."""
        require_id(group_id, "group_id")
        group = await self._db.read(GroupQueries.get, org_id, group_id)
        if group is None:
            raise not_found(group_id)
        return group

    async def list(self, org_id: str, *, size: int = 0, token: str = "") -> tuple[list[Group], str]:
        """Groups, newest first; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "groups")
        after = None if position is None else (position.time("t"), position.text("i"))
        groups = await self._db.read(lambda conn: GroupQueries.page(conn, org_id, after, limit + 1))
        next_token = ""
        if len(groups) > limit:
            groups = groups[:limit]
            next_token = encode_token("groups", t=groups[-1].created_at.isoformat(), i=groups[-1].id)
        return groups, next_token

    async def delete(self, org_id: str, group_id: str) -> None:
        """Deletes a group: its shared blocks are detached (the ones it created deleted); its agents stay."""
        group = await self.get(org_id, group_id)
        await self._undo(group.attachments, group.owned_block_ids)

        def tx(conn: Connection) -> None:
            if not GroupQueries.delete(conn, org_id, group_id):
                raise not_found(group_id)

        await self._db.write(tx)

    async def of_agent(self, agent_id: str) -> builtins.list[str]:
        """The groups an agent is in."""
        return await self._db.read(GroupQueries.of_agent, agent_id)
