"""Agents: configuration in the agent schema, core memory blocks in the memory service.

Creating an agent writes its blocks first (all or none) and its row second; if the row cannot be
written, the blocks are removed again, so a failed create leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from mnemo.memory.v1 import block_pb2, message_pb2, passage_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.group_store import GroupQueries
from mnemo_agent.memory_tools import CLASSIC, EDITING_TOOLS, LINES, with_tool_set
from mnemo_agent.mesh import Mesh
from mnemo_agent.store import Agent, AgentQueries
from mnemo_agent.tool_rules import check_rules
from mnemo_core.actor import Actor, current_actor
from mnemo_core.db import Database
from mnemo_core.errors import FailedPrecondition, FieldViolation, InvalidArgument, MnemoError, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)

ROW_CACHE_SIZE = 10_000
# How long the ids of the built-in memory tools, fixed by the tools service, are reused between creates.
BASE_TOOLS_TTL = 60.0
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+/\S+$")
AGENT_TYPES = ("standard", "voice", "sleeptime")
UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "description",
        "system",
        "model",
        "embedding_model",
        "context_window",
        "max_steps",
        "tool_ids",
        "tags",
        "metadata",
        "llm_options",
        "tool_rules",
        "summarizer_model",
        "memory_tool_set",
    }
)
MEMORY_TOOL_SETS = (CLASSIC, LINES)
SLEEPTIME_SYSTEM = """\
You are the sleep-time memory agent of another agent: you share its core memory blocks and work in the
background between its conversations. You receive transcripts of its recent conversation. Reorganise the
shared memory: {editing}, and keep every block within its limit. Do not address the user; when the
memory is in order, {finish}"""
_SLEEPTIME_TOOLS = {
    CLASSIC: (
        "add facts worth keeping with core_memory_append, correct or merge outdated or duplicated facts with "
        "core_memory_replace",
        "reply with a one-line note of what you changed.",
    ),
    LINES: (
        "add facts worth keeping with memory_insert, correct outdated ones with memory_replace, and merge "
        "or condense a cluttered block with memory_rethink",
        "call memory_finish_edits.",
    ),
}


def sleeptime_system(tool_set: str) -> str:
    """The system prompt of a sleep-time agent editing memory with `tool_set`."""
    editing, finish = _SLEEPTIME_TOOLS[tool_set]
    return SLEEPTIME_SYSTEM.format(editing=editing, finish=finish)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """An agent's configuration as a caller gives it."""

    name: str
    model: str
    description: str = ""
    system: str = ""
    embedding_model: str = ""
    context_window: int = 0
    max_steps: int = 0
    tool_ids: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    agent_type: str = "standard"
    llm_options: dict[str, Any] = field(default_factory=dict)
    tool_rules: list[dict[str, Any]] = field(default_factory=list)
    summarizer_model: str = ""
    sleeptime: dict[str, Any] = field(default_factory=dict)
    memory_tool_set: str = CLASSIC


@dataclass(frozen=True, slots=True)
class AgentView:
    """An agent with its core memory blocks."""

    row: Agent
    blocks: list[block_pb2.Block]


def _check(values: dict[str, Any], max_steps_limit: int, prefix: str = "agent.") -> None:
    if "name" in values:
        check_text(values["name"], f"{prefix}name", max_chars=200, allow_empty=False)
    if "model" in values and not MODEL_PATTERN.match(values["model"]):
        raise invalid(f"{prefix}model", "must be 'provider/model', e.g. 'openai/gpt-4o-mini'")
    if values.get("embedding_model") and not MODEL_PATTERN.match(values["embedding_model"]):
        raise invalid(f"{prefix}embedding_model", "must be 'provider/model'")
    for text_field, limit in (("description", 10_000), ("system", 200_000)):
        if text_field in values:
            check_text(values[text_field], f"{prefix}{text_field}", max_chars=limit)
    if not 0 <= values.get("max_steps", 0) <= max_steps_limit:
        raise invalid(f"{prefix}max_steps", f"must be between 0 and {max_steps_limit}")
    if values.get("context_window", 0) < 0:
        raise invalid(f"{prefix}context_window", "must not be negative")
    tags = values.get("tags", [])
    if len(tags) > 50 or any(not tag or len(tag) > 200 for tag in tags):
        raise invalid(f"{prefix}tags", "at most 50 tags of 1-200 characters")
    tool_ids = values.get("tool_ids", [])
    if len(set(tool_ids)) != len(tool_ids):
        raise invalid(f"{prefix}tool_ids", "must not repeat an id")
    if values.get("agent_type", "standard") not in AGENT_TYPES:
        raise invalid(f"{prefix}agent_type", f"must be one of {', '.join(AGENT_TYPES)}")
    if "tool_rules" in values:
        values["tool_rules"] = check_rules(values["tool_rules"], f"{prefix}tool_rules")
    if values.get("summarizer_model") and not MODEL_PATTERN.match(values["summarizer_model"]):
        raise invalid(f"{prefix}summarizer_model", "must be 'provider/model'")
    sleeptime = values.get("sleeptime") or {}
    if sleeptime.get("model") and not MODEL_PATTERN.match(sleeptime["model"]):
        raise invalid(f"{prefix}sleeptime.model", "must be 'provider/model'")
    if not 0 <= int(sleeptime.get("frequency", 0)) <= 10_000:
        raise invalid(f"{prefix}sleeptime.frequency", "must be between 0 and 10000")
    if sleeptime.get("enabled") and values.get("agent_type") == "sleeptime":
        raise invalid(f"{prefix}sleeptime", "a sleep-time agent cannot have a sleep-time agent of its own")
    if values.get("memory_tool_set", CLASSIC) not in MEMORY_TOOL_SETS:
        raise invalid(f"{prefix}memory_tool_set", f"must be one of {', '.join(MEMORY_TOOL_SETS)}")


def _not_found(agent_id: str) -> NotFound:
    return NotFound(f"agent {agent_id} not found", reason="AGENT_NOT_FOUND", metadata={"agent_id": agent_id})


def _renamed_violations(exc: MnemoError, old: str, new: str) -> MnemoError:
    """The memory service names fields of its own request; callers know them by ours."""
    exc.violations = [FieldViolation(v.field.replace(old, new, 1), v.description) for v in exc.violations]
    exc.message = exc.message.replace(old, new, 1)
    return exc


class Agents:
    """Agent configuration of one organization at a time."""

    def __init__(self, db: Database, mesh: Mesh, *, max_steps_limit: int) -> None:
        self._db = db
        self._mesh = mesh
        self._max_steps_limit = max_steps_limit
        # On SQLite this process is the only writer of its database, so a cache of agent rows that
        # this class invalidates on every change is exact. With Postgres (several replicas) every
        # turn reads the row.
        self._rows: OrderedDict[str, Agent] | None = OrderedDict() if db.is_sqlite else None
        self._base_tools: dict[str, tuple[float, list[tuple[str, str]]]] = {}

    @property
    def single_writer(self) -> bool:
        """Whether this process is the only one that changes these agents (SQLite: one process per file)."""
        return self._rows is not None

    def _remember(self, row: Agent) -> None:
        if self._rows is not None:
            self._rows[row.id] = row
            if len(self._rows) > ROW_CACHE_SIZE:
                self._rows.popitem(last=False)

    def _forget(self, agent_id: str) -> None:
        if self._rows is not None:
            self._rows.pop(agent_id, None)

    async def create(
        self,
        actor: Actor,
        spec: AgentSpec,
        blocks: list[block_pb2.Block],
        *,
        include_base_tools: bool,
        block_ids: list[str] | None = None,
        populate: Callable[[str], Awaitable[None]] | None = None,
    ) -> AgentView:
        """Creates an agent with new blocks and attached existing ones, all or nothing.

        `populate`, given the new agent's id, fills in more of its memory (an import's history) after
        the blocks and before the agent's row: the agent exists for callers only once it is complete.
        """
        values = {k: getattr(spec, k) for k in AgentSpec.__dataclass_fields__}
        _check(values, self._max_steps_limit)
        tool_rules = values["tool_rules"]
        tool_ids = await self._tool_ids(spec.tool_ids, include_base_tools, spec.memory_tool_set)
        agent_id = new_id("agent")
        sleeptime_id = new_id("agent") if spec.sleeptime.get("enabled") else None
        rows = await self._rows_of(actor, spec, agent_id, sleeptime_id, tool_ids, tool_rules)
        created: list[block_pb2.Block] = []
        if blocks:
            try:
                response = await self._mesh.blocks.BatchCreateBlocks(
                    block_pb2.BatchCreateBlocksRequest(agent_id=agent_id, blocks=blocks)
                )
            except InvalidArgument as exc:
                raise _renamed_violations(exc, "blocks[", "memory_blocks[") from None
            created = list(response.blocks)
        try:
            for block_id in block_ids or []:
                attached = await self._mesh.blocks.AttachBlock(
                    block_pb2.AttachBlockRequest(block_id=block_id, agent_id=agent_id)
                )
                created.append(attached.block)
            if sleeptime_id is not None:
                # The sleep-time agent shares every block of its primary.
                for block in created:
                    await self._mesh.blocks.AttachBlock(
                        block_pb2.AttachBlockRequest(block_id=block.id, agent_id=sleeptime_id)
                    )
            if populate is not None:
                await populate(agent_id)
            await self._db.write(AgentQueries.insert, rows)
        except BaseException:
            await asyncio.shield(self._undo_blocks(agent_id, sleeptime_id))
            raise
        return AgentView(rows[0], created)

    async def _rows_of(
        self,
        actor: Actor,
        spec: AgentSpec,
        agent_id: str,
        sleeptime_id: str | None,
        tool_ids: list[str],
        tool_rules: list[dict[str, Any]],
    ) -> list[Agent]:
        """The rows of a new agent (and of its sleep-time agent)."""
        now = utcnow()
        row = Agent(
            id=agent_id,
            org_id=actor.org_id,
            created_by=actor.user_id,
            name=spec.name,
            description=spec.description,
            system=spec.system,
            model=spec.model,
            embedding_model=spec.embedding_model,
            context_window=spec.context_window,
            max_steps=spec.max_steps,
            tool_ids=tool_ids,
            tags=list(spec.tags),
            metadata_json=dict(spec.metadata),
            agent_type=spec.agent_type,
            llm_options=dict(spec.llm_options),
            created_at=now,
            updated_at=now,
            tool_rules=tool_rules,
            summarizer_model=spec.summarizer_model,
            sleeptime=dict(spec.sleeptime),
            sleeptime_agent_id=sleeptime_id,
            primary_agent_id=None,
            memory_tool_set=spec.memory_tool_set,
        )
        rows = [row]
        if sleeptime_id is not None:
            base_tools = await self._tool_ids([], True, spec.memory_tool_set)
            rows.append(
                Agent(
                    id=sleeptime_id,
                    org_id=actor.org_id,
                    created_by=actor.user_id,
                    name=f"{spec.name}-sleeptime"[:200],
                    description=f"Reorganises the memory of agent {agent_id} between its turns.",
                    system=sleeptime_system(spec.memory_tool_set),
                    model=spec.sleeptime.get("model") or spec.model,
                    embedding_model=spec.embedding_model,
                    context_window=spec.context_window,
                    max_steps=0,
                    tool_ids=base_tools,
                    tags=[],
                    metadata_json={},
                    agent_type="sleeptime",
                    llm_options={},
                    created_at=now,
                    updated_at=now,
                    tool_rules=[],
                    summarizer_model=spec.summarizer_model,
                    sleeptime={},
                    sleeptime_agent_id=None,
                    primary_agent_id=agent_id,
                    memory_tool_set=spec.memory_tool_set,
                )
            )
        return rows

    async def _undo_blocks(self, agent_id: str, sleeptime_id: str | None) -> None:
        """Detaches a failed create's blocks again (the sleep-time agent's first, so the primary's go)."""
        if sleeptime_id is not None:
            await self._mesh.blocks.DetachAgentBlocks(
                block_pb2.DetachAgentBlocksRequest(agent_id=sleeptime_id)
            )
        await self._mesh.blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest(agent_id=agent_id))

    async def _tool_ids(self, requested: list[str], include_base_tools: bool, tool_set: str) -> list[str]:
        ids = list(requested)
        if ids:
            await self._mesh.tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=ids))
        if include_base_tools:
            # Of the editing tools, only the agent's tool set.
            others = {name for other, names in EDITING_TOOLS.items() if other != tool_set for name in names}
            base = [tool_id for name, tool_id in await self._base_tools_by_name() if name not in others]
            ids += [tool_id for tool_id in base if tool_id not in ids]
        return ids

    async def _base_tools_by_name(self) -> list[tuple[str, str]]:
        """The built-in memory tools, (name, id), as the tools service lists them (cached briefly)."""
        org_id = current_actor().org_id
        cached = self._base_tools.get(org_id)
        if cached is not None and time.monotonic() - cached[0] < BASE_TOOLS_TTL:
            return cached[1]
        base = await self._mesh.tools.ListTools(
            tool_pb2.ListToolsRequest(tool_type=tool_pb2.TOOL_TYPE_MEMORY, page_size=1000)
        )
        ids = [(tool.name, tool.id) for tool in base.tools]
        self._base_tools[org_id] = (time.monotonic(), ids)
        return ids

    async def row(self, org_id: str, agent_id: str) -> Agent:
        """An agent's configuration; NOT_FOUND if it is not in the organization."""
        require_id(agent_id, "agent_id")
        cached = self._rows.get(agent_id) if self._rows is not None else None
        if cached is not None and cached.org_id == org_id:
            return cached
        row = await self._db.read(AgentQueries.get, org_id, agent_id)
        if row is None:
            raise _not_found(agent_id)
        self._remember(row)
        return row

    async def tagged(self, org_id: str, tags: Sequence[str], limit: int) -> list[Agent]:
        """Up to `limit` agents of the organization that have every one of `tags`, newest first."""
        return await self._db.read(
            lambda conn: AgentQueries.page(conn, org_id, name="", tags=list(tags), after=None, limit=limit)
        )

    async def blocks_of(self, agent_id: str) -> list[block_pb2.Block]:
        """An agent's core memory blocks."""
        response = await self._mesh.blocks.ListBlocks(
            block_pb2.ListBlocksRequest(agent_id=agent_id, page_size=1000)
        )
        return list(response.blocks)

    async def get(self, org_id: str, agent_id: str) -> AgentView:
        """An agent with its blocks."""
        row = await self.row(org_id, agent_id)
        return AgentView(row, await self.blocks_of(agent_id))

    async def list(
        self,
        org_id: str,
        *,
        name: str = "",
        tags: list[str] | None = None,
        end_user_id: str = "",
        size: int = 0,
        token: str = "",
    ) -> tuple[list[AgentView], str]:
        """Agents, newest first (of one end user, when given), with their blocks; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "agents")
        after = None if position is None else (position.time("t"), position.text("i"))
        rows = await self._db.read(
            lambda conn: AgentQueries.page(
                conn,
                org_id,
                name=name,
                tags=tags or [],
                after=after,
                limit=limit + 1,
                end_user_id=end_user_id,
            )
        )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = encode_token("agents", t=rows[-1].created_at.isoformat(), i=rows[-1].id)
        blocks = await asyncio.gather(*(self.blocks_of(row.id) for row in rows))
        return [AgentView(row, b) for row, b in zip(rows, blocks, strict=True)], next_token

    async def update(self, org_id: str, agent_id: str, changes: dict[str, Any]) -> AgentView:
        """Changes the given fields of an agent."""
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise invalid("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        _check(changes, self._max_steps_limit)
        if changes.get("tool_ids"):
            await self._mesh.tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=changes["tool_ids"]))
        current = await self.row(org_id, agent_id)
        if "memory_tool_set" in changes:
            # The built-in editing tools follow the tool set (of the new tool_ids when they change too).
            tool_ids = changes.get("tool_ids", list(current.tool_ids or []))
            swapped = with_tool_set(tool_ids, changes["memory_tool_set"])
            if swapped != tool_ids:
                changes = {**changes, "tool_ids": swapped}
        columns = {("metadata_json" if key == "metadata" else key): value for key, value in changes.items()}
        self._forget(agent_id)
        if not await self._db.write(
            AgentQueries.update, org_id, agent_id, {**columns, "updated_at": utcnow()}
        ):
            raise NotFound(f"agent {agent_id} not found", reason="AGENT_NOT_FOUND")
        self._forget(agent_id)
        return await self.get(org_id, agent_id)

    async def delete(self, org_id: str, agent_id: str) -> None:
        """Deletes an agent's history and own blocks, then the agent (safe to retry if a step fails).

        An agent's sleep-time agent goes first, so the blocks they share are then the primary's alone.
        """
        row = await self.row(org_id, agent_id)
        groups = await self._db.read(GroupQueries.of_agent, agent_id)
        if groups:
            raise FailedPrecondition(
                f"agent {agent_id} belongs to group {groups[0]}; delete the group first",
                reason="AGENT_IN_GROUP",
                metadata={"group_id": groups[0]},
            )
        if row.sleeptime_agent_id:
            with contextlib.suppress(NotFound):
                await self.delete(org_id, row.sleeptime_agent_id)
        await asyncio.gather(
            self.purge_history(agent_id),
            self._mesh.blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest(agent_id=agent_id)),
            self._forget_tool_environment(agent_id),
        )
        self._forget(agent_id)
        await self._db.write(AgentQueries.delete, org_id, agent_id)
        self._forget(agent_id)

    async def purge_history(self, agent_id: str) -> None:
        """Deletes an agent's messages and archival passages (idempotent)."""
        await asyncio.gather(
            self._mesh.messages.PurgeAgentMessages(message_pb2.PurgeAgentMessagesRequest(agent_id=agent_id)),
            self._mesh.passages.PurgeAgentPassages(passage_pb2.PurgeAgentPassagesRequest(agent_id=agent_id)),
        )

    async def _forget_tool_environment(self, agent_id: str) -> None:
        # The agent's tool secrets live in the tools service; they must not outlive the agent.
        names = (
            await self._mesh.tools.GetToolEnvironment(tool_pb2.GetToolEnvironmentRequest(agent_id=agent_id))
        ).names
        if names:
            await self._mesh.tools.UpdateToolEnvironment(
                tool_pb2.UpdateToolEnvironmentRequest(agent_id=agent_id, unset=list(names))
            )

    async def attach_tool(self, org_id: str, agent_id: str, tool_id: str) -> AgentView:
        """Gives the agent a tool that exists (NOT_FOUND otherwise); attaching twice changes nothing."""
        require_id(agent_id, "agent_id")
        require_id(tool_id, "tool_id")
        await self.row(org_id, agent_id)
        await self._mesh.tools.GetTool(tool_pb2.GetToolRequest(tool_id=tool_id))
        return await self._change_tools(org_id, agent_id, add=tool_id)

    async def detach_tool(self, org_id: str, agent_id: str, tool_id: str) -> AgentView:
        """Takes a tool away (it need not exist any more); detaching a missing tool changes nothing."""
        require_id(agent_id, "agent_id")
        require_id(tool_id, "tool_id")
        return await self._change_tools(org_id, agent_id, remove=tool_id)

    async def _change_tools(
        self, org_id: str, agent_id: str, *, add: str = "", remove: str = ""
    ) -> AgentView:
        # Read-modify-write in one transaction with the row locked (SQLite: the single writer), so two
        # concurrent attaches both land.
        self._forget(agent_id)

        def tx(conn: Connection) -> Agent:
            row = AgentQueries.get(conn, org_id, agent_id, lock=True)
            if row is None:
                raise _not_found(agent_id)
            current = list(row.tool_ids or [])
            changed = [i for i in current if i != remove]
            if add and add not in changed:
                changed.append(add)
            # BatchGetTools takes at most 1000 ids, and every turn loads all of an agent's tools.
            if len(changed) > 1000:
                raise invalid("tool_id", "an agent has at most 1000 tools")
            if changed == current:
                return row
            now = utcnow()
            AgentQueries.update(conn, org_id, agent_id, {"tool_ids": changed, "updated_at": now})
            return dataclasses.replace(row, tool_ids=changed, updated_at=now)

        row = await self._db.write(tx)
        self._forget(agent_id)
        return AgentView(row, await self.blocks_of(agent_id))
