"""Agent files: export agents (and groups with their agents) as one JSON document, import them anywhere.

Export reads each agent's row here, its blocks, history, context window, passages and sources from the
memory service and its tools from the tools service, and writes them in the format of
`mnemo.rest.agent_files` (docs/schemas/agent-file.v1.json). Blocks shared by the file's agents stay shared;
tool rules are written as stored, so every rule type travels.

Import creates everything anew, all or nothing: custom tools first (one of the same name and source is
reused; the same name with other source is refused), then each agent with its blocks, history (grouped
by run and step as it was stored, the context window and its summary restored), passages (embedded
again) and sources (attached by name when the target has one), its row last, then the groups. When a
step fails, the agents already created are deleted, the failing one's history purged and blocks undone,
the tools it created deleted: nothing of the file is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pydantic
from google.protobuf import timestamp_pb2

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import block_pb2, passage_pb2, source_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.rest import agent_files as af
from mnemo.tools.v1 import mcp_pb2, tool_pb2
from mnemo_agent.agents import Agents, AgentSpec, AgentView
from mnemo_agent.context_window import is_front_summary
from mnemo_agent.group_store import Group
from mnemo_agent.groups import Groups, GroupSpec
from mnemo_agent.mesh import Mesh
from mnemo_agent.store import Agent
from mnemo_core.actor import Actor
from mnemo_core.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, MnemoError
from mnemo_core.ids import new_id
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import from_struct, to_struct, utcnow

log = logging.getLogger(__name__)

_PAGE = 1000
_TOOL_TYPES = EnumNames(tool_pb2.ToolType)
_EVENT_TYPES = EnumNames(message_pb2.EventType)


def _stamp(message: Any, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def _timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


# ----- messages <-> file items -----


def message_item(message: message_pb2.Message, run: str) -> dict[str, Any]:
    """A stored message as a file item (a dict of `af.FileMessage`)."""
    base: dict[str, Any] = {"run": run, "step": message.step, "created_at": _stamp(message, "create_time")}
    kind = message.WhichOneof("content")
    if kind == "user":
        return {**base, "role": "user", "text": message.user.text, "name": message.user.name}
    if kind in ("system", "assistant"):
        return {**base, "role": kind, "text": getattr(message, kind).text}
    if kind == "reasoning":
        return {
            **base,
            "role": "reasoning",
            "text": message.reasoning.text,
            "signature": message.reasoning.signature,
        }
    if kind == "tool_call":
        call = message.tool_call.tool_call
        return {
            **base,
            "role": "tool_call",
            "tool_call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }
    if kind == "tool_return":
        ret = message.tool_return
        return {
            **base,
            "role": "tool_return",
            "tool_call_id": ret.tool_call_id,
            "name": ret.name,
            "content": ret.content,
            "status": "error" if ret.status == message_pb2.TOOL_RETURN_STATUS_ERROR else "success",
            "stdout": ret.stdout,
            "stderr": ret.stderr,
        }
    event = message.event
    return {
        **base,
        "role": "event",
        "event_type": _EVENT_TYPES.name(event.type) or "summary",
        "text": event.text,
        "evicted_count": event.evicted_count,
    }


def message_of(item: af.FileMessage) -> message_pb2.Message:
    """A file item as a message to store."""
    match item:
        case af.UserItem(text=text, name=name):
            return message_pb2.Message(user=message_pb2.UserContent(text=text, name=name))
        case af.SystemItem(text=text):
            return message_pb2.Message(system=message_pb2.SystemContent(text=text))
        case af.AssistantItem(text=text):
            return message_pb2.Message(assistant=message_pb2.AssistantContent(text=text))
        case af.ReasoningItem(text=text, signature=signature):
            return message_pb2.Message(reasoning=message_pb2.ReasoningContent(text=text, signature=signature))
        case af.ToolCallItem(tool_call_id=call_id, name=name, arguments=arguments):
            call = message_pb2.ToolCall(id=call_id, name=name, arguments=arguments)
            return message_pb2.Message(tool_call=message_pb2.ToolCallContent(tool_call=call))
        case af.ToolReturnItem():
            status = (
                message_pb2.TOOL_RETURN_STATUS_ERROR
                if item.status == "error"
                else message_pb2.TOOL_RETURN_STATUS_SUCCESS
            )
            return message_pb2.Message(
                tool_return=message_pb2.ToolReturnContent(
                    tool_call_id=item.tool_call_id,
                    name=item.name,
                    content=item.content,
                    status=status,
                    stdout=item.stdout,
                    stderr=item.stderr,
                )
            )
        case af.EventItem(event_type=event_type, text=text, evicted_count=evicted):
            event = message_pb2.EventContent(
                type=_EVENT_TYPES.value(event_type), text=text, evicted_count=evicted
            )
            return message_pb2.Message(event=event)
    raise AssertionError(f"unknown message item {item!r}")


def _violations(exc: pydantic.ValidationError) -> InvalidArgument:
    error = InvalidArgument(
        f"the agent file is not valid: {exc.errors()[0]['msg']}", reason="AGENT_FILE_INVALID"
    )
    error.violations = [
        FieldViolation(".".join(str(p) for p in e["loc"]) or "agent_file", e["msg"])
        for e in exc.errors()[:20]
    ]
    return error


class _Export:
    """One file being written: its agents, and the blocks, tools and sources they use (each once)."""

    def __init__(self) -> None:
        self.agents: list[dict[str, Any]] = []
        self.blocks: dict[str, dict[str, Any]] = {}
        self.tools: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self.agent_ids: dict[str, str] = {}

    def local(self, table: dict[str, dict[str, Any]], kind: str, real_id: str) -> str:
        return table[real_id]["id"] if real_id in table else f"{kind}-{len(table)}"

    def document(self, groups: list[dict[str, Any]]) -> str:
        file = af.AgentFile(
            exported_at=utcnow(),
            agents=[af.FileAgent.model_validate(a) for a in self.agents],
            blocks=[af.FileBlock.model_validate(b) for b in self.blocks.values()],
            tools=[af.FileTool.model_validate(t) for t in self.tools.values()],
            sources=[af.FileSource.model_validate(s) for s in self.sources.values()],
            groups=[af.FileGroup.model_validate(g) for g in groups],
        )
        return file.model_dump_json()


class AgentFiles:
    """Exports and imports agent files."""

    def __init__(self, agents: Agents, groups: Groups, mesh: Mesh, *, max_bytes: int) -> None:
        self._agents = agents
        self._groups = groups
        self._mesh = mesh
        self._max_bytes = max_bytes

    # ----- export -----

    async def export_agent(self, actor: Actor, agent_id: str, *, include_passages: bool) -> str:
        """The agent file of one agent."""
        out = _Export()
        await self._export_agent(out, await self._agents.row(actor.org_id, agent_id), include_passages)
        return out.document([])

    async def export_group(self, actor: Actor, group_id: str, *, include_passages: bool) -> str:
        """The agent file of a group with its agents (the manager first)."""
        group = await self._groups.get(actor.org_id, group_id)
        out = _Export()
        for member_id in group.everyone:
            await self._export_agent(out, await self._agents.row(actor.org_id, member_id), include_passages)
        shared = [out.blocks[b]["id"] for b in group.shared_block_ids if b in out.blocks]
        document = {
            "id": "group-0",
            "name": group.name,
            "description": group.description,
            "manager_type": group.manager_type,
            "manager_agent_id": out.agent_ids.get(group.manager_agent_id or ""),
            "agent_ids": [out.agent_ids[a] for a in group.agent_ids],
            "max_turns": group.max_turns,
            "termination_token": group.termination_token,
            "sleeptime_frequency": group.sleeptime_frequency,
            "shared_block_ids": shared,
            "metadata": group.metadata_json,
        }
        return out.document([document])

    async def _export_agent(self, out: _Export, row: Agent, include_passages: bool) -> None:
        local_id = f"agent-{len(out.agents)}"
        out.agent_ids[row.id] = local_id
        blocks, tools, (messages, context), sources = await asyncio.gather(
            self._agents.blocks_of(row.id),
            self._tools_of(row),
            self._history_of(row.id),
            self._sources_of(row.id),
        )
        block_ids = []
        for block in blocks:
            block_ids.append(out.local(out.blocks, "block", block.id))
            out.blocks.setdefault(
                block.id,
                {
                    "id": block_ids[-1],
                    "label": block.label,
                    "value": block.value,
                    "limit": block.limit,
                    "description": block.description,
                    "read_only": block.read_only,
                    "metadata": from_struct(block.metadata),
                },
            )
        tool_ids = []
        for tool in tools:
            tool_ids.append(out.local(out.tools, "tool", tool["real_id"]))
            out.tools.setdefault(
                tool["real_id"], {**{k: v for k, v in tool.items() if k != "real_id"}, "id": tool_ids[-1]}
            )
        source_ids = []
        for source in sources:
            source_ids.append(out.local(out.sources, "source", source.id))
            out.sources.setdefault(
                source.id, {"id": source_ids[-1], "name": source.name, "description": source.description}
            )
        out.agents.append(
            {
                "id": local_id,
                "name": row.name,
                "model": row.model,
                "description": row.description,
                "system": row.system,
                "agent_type": row.agent_type,
                "embedding_model": row.embedding_model,
                "context_window": row.context_window,
                "max_steps": row.max_steps,
                "llm_options": row.llm_options or {},
                "summarizer_model": row.summarizer_model or "",
                "tags": list(row.tags or []),
                "metadata": row.metadata_json or {},
                "tool_rules": list(row.tool_rules or []),
                "memory_tool_set": row.memory_tool_set,
                "sleeptime": row.sleeptime or {},
                "block_ids": block_ids,
                "tool_ids": tool_ids,
                "source_ids": source_ids,
                "messages": messages,
                "context": context,
                "passages": await self._passages_of(row.id) if include_passages else None,
            }
        )

    async def _tools_of(self, row: Agent) -> list[dict[str, Any]]:
        ids = list(row.tool_ids or [])
        if not ids:
            return []
        tools = (await self._mesh.tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=ids))).tools
        servers: dict[str, str] = {}
        result = []
        for tool in tools:
            kind = _TOOL_TYPES.name(tool.tool_type) or "custom"
            entry: dict[str, Any] = {
                "real_id": tool.id,
                "name": tool.name,
                "type": kind,
                "description": tool.description,
                "json_schema": json.loads(tool.json_schema or "{}"),
                "source_code": tool.source_code,
                "tags": list(tool.tags),
                "return_char_limit": tool.return_char_limit,
                "pip_requirements": list(tool.pip_requirements),
                "timeout_seconds": tool.timeout_seconds,
            }
            if kind == "mcp":
                if tool.mcp_server_id not in servers:
                    server = await self._mesh.mcp.GetMcpServer(
                        mcp_pb2.GetMcpServerRequest(mcp_server_id=tool.mcp_server_id)
                    )
                    servers[tool.mcp_server_id] = server.server.name
                entry["mcp"] = {"server_name": servers[tool.mcp_server_id], "tool_name": tool.mcp_tool_name}
            result.append(entry)
        return result

    async def _history_of(self, agent_id: str) -> tuple[list[dict[str, Any]], dict[str, int | None]]:
        """Every message of the agent, oldest first, and where its context window starts."""
        stored: list[message_pb2.Message] = []
        token = ""
        while True:
            page = await self._mesh.messages.ListMessages(
                history_pb2.ListMessagesRequest(agent_id=agent_id, page_size=_PAGE, page_token=token)
            )
            stored.extend(page.messages)
            token = page.next_page_token
            if not token:
                break
        window = (
            await self._mesh.messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent_id))
        ).messages
        index = {m.id: i for i, m in enumerate(stored)}
        summary = index.get(window[0].id) if window and is_front_summary(window[0]) else None
        body = window[1:] if summary is not None else window
        start = index.get(body[0].id) if body else None
        runs: dict[str, str] = {}
        items = [message_item(m, runs.setdefault(m.run_id, f"run-{len(runs)}")) for m in stored]
        return items, {"start": start, "summary": summary}

    async def _passages_of(self, agent_id: str) -> list[dict[str, Any]]:
        passages: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self._mesh.passages.ListPassages(
                passage_pb2.ListPassagesRequest(agent_id=agent_id, page_size=_PAGE, page_token=token)
            )
            passages.extend(
                {
                    "text": p.text,
                    "tags": list(p.tags),
                    "metadata": from_struct(p.metadata),
                    "speaker": p.speaker,
                    "created_at": _stamp(p, "create_time"),
                }
                for p in page.passages
            )
            token = page.next_page_token
            if not token:
                return passages

    async def _sources_of(self, agent_id: str) -> list[source_pb2.Source]:
        found = await self._mesh.sources.ListSources(
            source_pb2.ListSourcesRequest(agent_id=agent_id, page_size=1000)
        )
        return list(found.sources)

    # ----- import -----

    def parse(self, text: str) -> af.AgentFile:
        """The file, checked and upgraded to the current version; nothing is written."""
        size = len(text.encode())
        if size > self._max_bytes:
            raise InvalidArgument(
                f"the agent file is {size} bytes; this server imports at most {self._max_bytes}",
                reason="AGENT_FILE_TOO_LARGE",
                metadata={"max_bytes": str(self._max_bytes)},
            )
        try:
            file = af.loads(text)
        except af.UnsupportedVersion as exc:
            raise InvalidArgument(
                str(exc), reason="AGENT_FILE_VERSION_UNSUPPORTED", metadata={"supported": f"0-{af.VERSION}"}
            ) from None
        except pydantic.ValidationError as exc:
            raise _violations(exc) from None
        except (ValueError, TypeError) as exc:  # not JSON, or JSON that is not an object
            raise InvalidArgument(
                f"the agent file is not valid: {exc}", reason="AGENT_FILE_INVALID"
            ) from None
        _check_links(file)
        return file

    async def import_agents(self, actor: Actor, text: str) -> list[AgentView]:
        """Creates every agent of the file (and its groups); returns the agents in the file's order."""
        file = self.parse(text)
        views, _ = await self._import(actor, file)
        return views

    async def import_group(self, actor: Actor, text: str) -> tuple[Group, list[AgentView]]:
        """Creates the first group of the file with its agents."""
        file = self.parse(text)
        if not file.groups:
            raise InvalidArgument("the agent file holds no group", reason="AGENT_FILE_HAS_NO_GROUP")
        views, groups = await self._import(actor, file)
        return groups[0], views

    async def _import(self, actor: Actor, file: af.AgentFile) -> tuple[list[AgentView], list[Group]]:
        created_tools: list[str] = []
        views: list[AgentView] = []
        try:
            tool_ids = await self._tools(file.tools, created_tools)
            sources = await self._source_ids(file.sources)
            block_ids: dict[str, str] = {}
            blocks = {b.id: b for b in file.blocks}
            agent_ids: dict[str, str] = {}
            for agent in file.agents:
                view = await self._import_agent(actor, agent, blocks, block_ids, tool_ids, sources)
                views.append(view)
                agent_ids[agent.id] = view.row.id
            groups = [await self._import_group(actor, g, agent_ids, block_ids) for g in file.groups]
        except BaseException:
            await asyncio.shield(self._undo(actor, views, created_tools))
            raise
        return views, groups

    async def _undo(self, actor: Actor, views: Sequence[AgentView], tool_ids: Sequence[str]) -> None:
        for view in reversed(views):
            try:
                await self._agents.delete(actor.org_id, view.row.id)
            except MnemoError as exc:
                log.warning("undoing an import: agent %s stays: %s", view.row.id, exc.message)
        for tool_id in tool_ids:
            with contextlib.suppress(MnemoError):
                await self._mesh.tools.DeleteTool(tool_pb2.DeleteToolRequest(tool_id=tool_id))

    async def _tools(self, tools: Sequence[af.FileTool], created: list[str]) -> dict[str, str]:
        """The target's tool id for each tool of the file (custom tools created when missing)."""
        ids: dict[str, str] = {}
        servers: dict[str, str] | None = None
        for i, tool in enumerate(tools):
            if tool.type in ("memory", "control"):
                found = await self._named(tool.name)
                if found is None or found.tool_type not in (
                    tool_pb2.TOOL_TYPE_MEMORY,
                    tool_pb2.TOOL_TYPE_CONTROL,
                ):
                    raise FailedPrecondition(
                        f"tools[{i}]: '{tool.name}' is not a built-in tool of this server",
                        reason="TOOL_NOT_FOUND",
                        metadata={"name": tool.name},
                    )
                ids[tool.id] = found.id
            elif tool.type == "mcp":
                if servers is None:
                    listed = await self._mesh.mcp.ListMcpServers(
                        mcp_pb2.ListMcpServersRequest(page_size=1000)
                    )
                    servers = {s.name: s.id for s in listed.servers}
                ids[tool.id] = await self._mcp_tool(i, tool, servers)
            else:
                ids[tool.id] = await self._custom_tool(i, tool, created)
        return ids

    async def _named(self, name: str) -> tool_pb2.Tool | None:
        found = await self._mesh.tools.ListTools(tool_pb2.ListToolsRequest(names=[name], page_size=10))
        return next((t for t in found.tools if t.name == name), None)

    async def _mcp_tool(self, i: int, tool: af.FileTool, servers: dict[str, str]) -> str:
        ref = tool.mcp
        if ref is None:
            raise InvalidArgument(
                f"tools[{i}]: an MCP tool needs its 'mcp' reference", reason="AGENT_FILE_INVALID"
            )
        server_id = servers.get(ref.server_name)
        if server_id is None:
            raise FailedPrecondition(
                f"tools[{i}]: MCP server '{ref.server_name}' is not registered here; register it first",
                reason="MCP_SERVER_NOT_FOUND",
                metadata={"server_name": ref.server_name},
            )
        listed = await self._mesh.tools.ListTools(
            tool_pb2.ListToolsRequest(mcp_server_id=server_id, page_size=1000)
        )
        found = next((t for t in listed.tools if t.mcp_tool_name == ref.tool_name), None)
        if found is None:
            raise FailedPrecondition(
                f"tools[{i}]: MCP server '{ref.server_name}' has no tool '{ref.tool_name}'",
                reason="MCP_TOOL_NOT_FOUND",
                metadata={"server_name": ref.server_name, "tool_name": ref.tool_name},
            )
        return found.id

    async def _custom_tool(self, i: int, tool: af.FileTool, created: list[str]) -> str:
        existing = await self._named(tool.name)
        if existing is not None:
            if existing.source_code == tool.source_code:
                return existing.id
            raise AlreadyExists(
                f"tools[{i}]: a tool named '{tool.name}' exists here with other source code; rename one",
                reason="TOOL_NAME_TAKEN",
                metadata={"name": tool.name, "tool_id": existing.id},
            )
        made = await self._mesh.tools.CreateTool(
            tool_pb2.CreateToolRequest(
                tool=tool_pb2.Tool(
                    source_code=tool.source_code,
                    tags=tool.tags,
                    return_char_limit=tool.return_char_limit,
                    pip_requirements=tool.pip_requirements,
                    timeout_seconds=tool.timeout_seconds,
                )
            )
        )
        created.append(made.tool.id)
        return made.tool.id

    async def _source_ids(self, sources: Sequence[af.FileSource]) -> dict[str, str]:
        """The target's sources of the file's names (the others are left out)."""
        if not sources:
            return {}
        listed = await self._mesh.sources.ListSources(source_pb2.ListSourcesRequest(page_size=1000))
        by_name = {s.name: s.id for s in listed.sources}
        return {s.id: by_name[s.name] for s in sources if s.name in by_name}

    async def _import_agent(
        self,
        actor: Actor,
        agent: af.FileAgent,
        blocks: dict[str, af.FileBlock],
        block_ids: dict[str, str],
        tool_ids: dict[str, str],
        sources: dict[str, str],
    ) -> AgentView:
        new = [b for b in agent.block_ids if b not in block_ids]
        spec = AgentSpec(
            name=agent.name,
            model=agent.model,
            description=agent.description,
            system=agent.system,
            embedding_model=agent.embedding_model,
            context_window=agent.context_window,
            max_steps=agent.max_steps,
            tool_ids=list(dict.fromkeys(tool_ids[t] for t in agent.tool_ids)),
            tags=agent.tags,
            metadata=agent.metadata,
            agent_type=agent.agent_type,
            llm_options=agent.llm_options,
            tool_rules=agent.tool_rules,
            summarizer_model=agent.summarizer_model,
            sleeptime=agent.sleeptime,
            memory_tool_set=agent.memory_tool_set,
        )

        async def populate(agent_id: str) -> None:
            try:
                await self._history(agent_id, agent)
                for passage in agent.passages or []:
                    request = passage_pb2.CreatePassagesRequest(
                        agent_id=agent_id,
                        text=passage.text,
                        tags=passage.tags,
                        metadata=to_struct(passage.metadata),
                        speaker=passage.speaker,
                        create_time=_timestamp(passage.created_at),
                        embedding_model=agent.embedding_model,
                    )
                    await self._mesh.passages.CreatePassages(request)
                for source_id in agent.source_ids:
                    if source_id in sources:
                        await self._mesh.sources.AttachSource(
                            source_pb2.AttachSourceRequest(source_id=sources[source_id], agent_id=agent_id)
                        )
            except BaseException:
                await asyncio.shield(self._agents.purge_history(agent_id))
                raise

        view = await self._agents.create(
            actor,
            spec,
            [_block(blocks[b]) for b in new],
            include_base_tools=False,
            block_ids=[block_ids[b] for b in agent.block_ids if b in block_ids],
            populate=populate,
        )
        for local_id, block in zip(new, view.blocks, strict=False):
            block_ids[local_id] = block.id
        return view

    async def _history(self, agent_id: str, agent: af.FileAgent) -> None:
        """Stores the agent's history step by step as it was stored, then restores its context window."""
        summary_at = agent.context.summary
        runs: dict[str, str] = {}
        stored: list[str | None] = []
        batch: list[message_pb2.Message] = []
        batch_at: list[int] = []
        key: tuple[str, int] | None = None

        async def flush() -> None:
            if batch:
                assert key is not None
                appended = await self._mesh.messages.AppendMessages(
                    history_pb2.AppendMessagesRequest(
                        agent_id=agent_id,
                        run_id=runs.setdefault(key[0], new_id("run")),
                        step=key[1],
                        messages=batch,
                    )
                )
                for at, message in zip(batch_at, appended.messages, strict=True):
                    stored[at] = message.id
                batch.clear()
                batch_at.clear()

        for i, item in enumerate(agent.messages):
            stored.append(None)
            if i == summary_at:
                continue  # shown in front of the window again below
            if (item.run, item.step) != key:
                await flush()
                key = (item.run, item.step)
            batch.append(message_of(item))
            batch_at.append(i)
        await flush()
        start = agent.context.start
        keep_from = stored[start] if start is not None and start < len(stored) else None
        if keep_from is None:
            return
        request = history_pb2.CompactContextWindowRequest(agent_id=agent_id, keep_from_message_id=keep_from)
        if summary_at is not None:
            request.summary.CopyFrom(message_of(agent.messages[summary_at]))
        elif start == 0:
            return
        await self._mesh.messages.CompactContextWindow(request)

    async def _import_group(
        self, actor: Actor, group: af.FileGroup, agent_ids: dict[str, str], block_ids: dict[str, str]
    ) -> Group:
        spec = GroupSpec(
            name=group.name,
            description=group.description,
            manager_type=group.manager_type,
            agent_ids=[agent_ids[a] for a in group.agent_ids],
            manager_agent_id=agent_ids[group.manager_agent_id] if group.manager_agent_id else "",
            max_turns=group.max_turns,
            termination_token=group.termination_token,
            sleeptime_frequency=group.sleeptime_frequency,
            shared_block_ids=[block_ids[b] for b in group.shared_block_ids if b in block_ids],
            metadata=group.metadata,
        )
        return await self._groups.create(actor, spec, [])


def _block(block: af.FileBlock) -> block_pb2.Block:
    return block_pb2.Block(
        label=block.label,
        value=block.value,
        limit=block.limit,
        description=block.description,
        read_only=block.read_only,
        metadata=to_struct(block.metadata),
    )


def _check_links(file: af.AgentFile) -> None:
    """Every id the file's parts name is one of its own."""
    blocks = {b.id for b in file.blocks}
    tools = {t.id for t in file.tools}
    sources = {s.id for s in file.sources}
    agents = {a.id for a in file.agents}

    def missing(field: str, wanted: Sequence[str], known: set[str]) -> None:
        for i, local_id in enumerate(wanted):
            if local_id not in known:
                raise InvalidArgument(
                    f"{field}[{i}]: '{local_id}' is not in the file", reason="AGENT_FILE_INVALID"
                ).with_violation(f"{field}[{i}]", "names nothing in the file")

    for i, agent in enumerate(file.agents):
        missing(f"agents[{i}].block_ids", agent.block_ids, blocks)
        missing(f"agents[{i}].tool_ids", agent.tool_ids, tools)
        missing(f"agents[{i}].source_ids", agent.source_ids, sources)
        for name, index in (("start", agent.context.start), ("summary", agent.context.summary)):
            if index is not None and index >= len(agent.messages):
                raise invalid_index(f"agents[{i}].context.{name}")
        if agent.context.summary is not None and agent.messages[agent.context.summary].role != "event":
            raise invalid_index(f"agents[{i}].context.summary")
    for i, group in enumerate(file.groups):
        missing(f"groups[{i}].agent_ids", group.agent_ids, agents)
        missing(
            f"groups[{i}].manager_agent_id",
            [group.manager_agent_id] if group.manager_agent_id else [],
            agents,
        )
        missing(f"groups[{i}].shared_block_ids", group.shared_block_ids, blocks)


def invalid_index(field: str) -> InvalidArgument:
    """The error for a context index that names no message (or a summary that is not an event)."""
    return InvalidArgument(
        f"{field} names no message of its agent that can stand there", reason="AGENT_FILE_INVALID"
    ).with_violation(field, "out of range, or not an event message")
