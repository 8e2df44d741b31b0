"""The API's resources, each method written once as the `Call` it makes (see transport.py).

Every method returns a model of `mnemo.rest` (or a `Page` of them).
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from mnemo.client.models import (
    Agent,
    Block,
    BlockCreate,
    BlockVersion,
    File,
    Job,
    Message,
    MessageCreate,
    Page,
    Passage,
    PassageSearchResult,
    Run,
    SendMessageResponse,
    Source,
    Upload,
)
from mnemo.client.multipart import MultipartUpload
from mnemo.client.transport import (
    Call,
    EventCall,
    Poll,
    Resource,
    TransportT,
    endpoint,
    parse_as,
    parse_nothing,
    parse_page,
    streaming,
)
from mnemo.rest.agents import AgentCreate, AgentUpdate, ContextBreakdown
from mnemo.rest.archival import PassageCreate
from mnemo.rest.batches import Batch, BatchCreate, BatchTurn
from mnemo.rest.blocks import BlockCreateRequest, BlockRestore, BlockUpdate
from mnemo.rest.groups import Group, GroupCreate, GroupMessageRequest, GroupMessageResponse, GroupRun
from mnemo.rest.identities import Identity, IdentityCreate, IdentityType, IdentityUpdate
from mnemo.rest.identity import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    Organization,
    OrganizationCreate,
    User,
    UserCreate,
)
from mnemo.rest.mcp import McpServer, McpServerCreate, McpServerWithTools
from mnemo.rest.messages import (
    EphemeralAgent,
    EphemeralRequest,
    EphemeralResponse,
    MessageSearchResult,
    SendMessageRequest,
)
from mnemo.rest.models import ModelList, UsageRow
from mnemo.rest.runs import Approval
from mnemo.rest.sources import SourceCreate, SourceUpdate
from mnemo.rest.tools import (
    Tool,
    ToolCreate,
    ToolEnvironment,
    ToolEnvironmentUpdate,
    ToolRun,
    ToolRunResult,
    ToolType,
    ToolUpdate,
)

RunStatus = Literal["created", "running", "completed", "failed", "cancelled", "awaiting_approval"]
FINISHED_RUN_STATUSES = frozenset({"completed", "failed", "cancelled", "awaiting_approval"})

_AGENT = TypeAdapter(Agent)
_AGENTS = TypeAdapter(list[Agent])
_BLOCK = TypeAdapter(Block)
_BLOCKS = TypeAdapter(list[Block])
_BLOCK_VERSIONS = TypeAdapter(list[BlockVersion])
_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
_SEND = TypeAdapter(SendMessageResponse)
_RUN = TypeAdapter(Run)
_RUNS = TypeAdapter(list[Run])
_PASSAGES = TypeAdapter(list[Passage])
_SEARCH = TypeAdapter(PassageSearchResult)
_SOURCE = TypeAdapter(Source)
_SOURCES = TypeAdapter(list[Source])
_UPLOAD = TypeAdapter(Upload)
_JOB = TypeAdapter(Job)
_ORGANIZATION = TypeAdapter(Organization)
_ORGANIZATIONS = TypeAdapter(list[Organization])
_USER = TypeAdapter(User)
_USERS = TypeAdapter(list[User])
_API_KEY = TypeAdapter(ApiKey)
_API_KEYS = TypeAdapter(list[ApiKey])
_API_KEY_CREATED = TypeAdapter(ApiKeyCreated)
_MESSAGE_SEARCH = TypeAdapter(MessageSearchResult)
_EPHEMERAL = TypeAdapter(EphemeralResponse)
_BATCH = TypeAdapter(Batch)
_CONTEXT = TypeAdapter(ContextBreakdown)
_IDENTITY = TypeAdapter(Identity)
_IDENTITIES = TypeAdapter(list[Identity])
_TOOL = TypeAdapter(Tool)
_TOOLS = TypeAdapter(list[Tool])
_TOOL_LIST = _TOOLS
_TOOL_RUN = TypeAdapter(ToolRunResult)
_TOOL_ENV = TypeAdapter(ToolEnvironment)
_MCP_SERVER = TypeAdapter(McpServer)
_MCP_SERVERS = TypeAdapter(list[McpServer])
_MCP_WITH_TOOLS = TypeAdapter(McpServerWithTools)
_MODEL_LIST = TypeAdapter(ModelList)
_USAGE_ROWS = TypeAdapter(list[UsageRow])
_FILES = TypeAdapter(list[File])
_GROUP = TypeAdapter(Group)
_GROUPS = TypeAdapter(list[Group])
_GROUP_RUN = TypeAdapter(GroupRun)
_GROUP_ANSWER = TypeAdapter(GroupMessageResponse)


def _text(response: Any) -> str:
    return str(response.text)


def _body(model: Any) -> Any:
    """A request model as JSON, without the fields left at their defaults."""
    return model.model_dump(mode="json", exclude_unset=True)


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _drop_empty(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value not in (None, "", [], ())}


def _turn(messages: str | Sequence[MessageCreate | Mapping[str, Any]], max_steps: int) -> SendMessageRequest:
    items = [MessageCreate(content=messages)] if isinstance(messages, str) else messages
    return SendMessageRequest.model_validate({"messages": items, "max_steps": max_steps})


class Agents(Resource[TransportT]):
    """Agents and their core memory blocks."""

    @endpoint
    def create(
        self,
        *,
        name: str,
        model: str,
        memory_blocks: Sequence[BlockCreate | Mapping[str, Any]] = (),
        system: str = "",
        description: str = "",
        tool_ids: Sequence[str] = (),
        block_ids: Sequence[str] = (),
        include_base_tools: bool = True,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Call[Agent]:
        """Creates an agent; `options` sets other `AgentCreate` fields (e.g. `tool_rules`, `max_steps`)."""
        body = AgentCreate.model_validate(
            {
                "name": name,
                "model": model,
                "memory_blocks": list(memory_blocks),
                "system": system,
                "description": description,
                "tool_ids": list(tool_ids),
                "block_ids": list(block_ids),
                "include_base_tools": include_base_tools,
                "tags": list(tags),
                "metadata": dict(metadata or {}),
                **(options or {}),
            }
        )
        return Call("POST", "/v1/agents", parse_as(_AGENT), json=_body(body))

    @endpoint
    def list(
        self,
        *,
        limit: int = 50,
        page_token: str = "",
        name: str = "",
        tags: Sequence[str] = (),
        identity_id: str = "",
    ) -> Call[Page[Agent]]:
        """One page of agents, newest first (of one identity, when given)."""
        params = _drop_empty(
            {
                "limit": limit,
                "page_token": page_token,
                "name": name,
                "tags": list(tags),
                "identity_id": identity_id,
            }
        )
        return Call("GET", "/v1/agents", parse_page(_AGENTS), params=params, retry=True)

    @endpoint
    def get(self, agent_id: str) -> Call[Agent]:
        """One agent with its blocks."""
        return Call("GET", f"/v1/agents/{agent_id}", parse_as(_AGENT), retry=True)

    @endpoint
    def update(self, agent_id: str, /, **fields: Any) -> Call[Agent]:
        """Changes the given `AgentUpdate` fields (e.g. `model`, `system`, `tool_ids`); the rest stay."""
        body = AgentUpdate.model_validate(fields)
        return Call("PATCH", f"/v1/agents/{agent_id}", parse_as(_AGENT), json=_body(body))

    @endpoint
    def delete(self, agent_id: str) -> Call[None]:
        """Deletes an agent with its history and the blocks made for it."""
        return Call("DELETE", f"/v1/agents/{agent_id}", parse_nothing, retry=True)

    @endpoint
    def export(self, agent_id: str, *, include_passages: bool = False) -> Call[str]:
        """The agent as an agent file (JSON text; `mnemo.rest.agent_files.loads` reads it)."""
        params = {"include_passages": "true"} if include_passages else None
        return Call("GET", f"/v1/agents/{agent_id}/export", _text, params=params, retry=True)

    @endpoint
    def import_file(self, agent_file: str | bytes) -> Call[Agent]:
        """Creates the agents of an agent file anew; returns the first."""
        content = agent_file.encode() if isinstance(agent_file, str) else agent_file
        files = {"file": ("agent.json", content, "application/json")}
        return Call("POST", "/v1/agents/import", parse_as(_AGENT), files=files)

    @endpoint
    def context(self, agent_id: str) -> Call[ContextBreakdown]:
        """How the agent's next model call would fill its context window: tokens per section."""
        return Call("GET", f"/v1/agents/{agent_id}/context", parse_as(_CONTEXT), retry=True)


class Messages(Resource[TransportT]):
    """Turns (send, stream, in the background) and the message history."""

    @endpoint
    def send(
        self,
        agent_id: str,
        messages: str | Sequence[MessageCreate | Mapping[str, Any]],
        *,
        max_steps: int = 0,
        idempotency_key: str | None = None,
    ) -> Call[SendMessageResponse]:
        """Runs one turn. A fresh idempotency key is made when none is given, so retries cannot run it twice."""
        return Call(
            "POST",
            f"/v1/agents/{agent_id}/messages",
            parse_as(_SEND),
            json=_body(_turn(messages, max_steps)),
            headers=_idempotency(idempotency_key),
            default_idempotency_key=str(uuid.uuid4()),
            retry=True,
        )

    @streaming
    def stream(
        self,
        agent_id: str,
        messages: str | Sequence[MessageCreate | Mapping[str, Any]],
        *,
        max_steps: int = 0,
        stream_tokens: bool = False,
        idempotency_key: str | None = None,
    ) -> EventCall:
        """Runs one turn, streaming its messages (and token deltas with `stream_tokens`), stop reason, usage."""
        body = _body(_turn(messages, max_steps)) | {"stream_tokens": stream_tokens}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return EventCall(f"/v1/agents/{agent_id}/messages/stream", body, headers)

    @endpoint
    def send_async(
        self,
        agent_id: str,
        messages: str | Sequence[MessageCreate | Mapping[str, Any]],
        *,
        max_steps: int = 0,
        idempotency_key: str | None = None,
    ) -> Call[Run]:
        """Starts a turn in the background; returns its run (see `runs.wait`)."""
        return Call(
            "POST",
            f"/v1/agents/{agent_id}/messages/async",
            parse_as(_RUN),
            json=_body(_turn(messages, max_steps)),
            headers=_idempotency(idempotency_key),
            default_idempotency_key=str(uuid.uuid4()),
            retry=True,
        )

    @endpoint
    def list(
        self,
        agent_id: str,
        *,
        limit: int = 100,
        before: str = "",
        after: str = "",
        order: Literal["asc", "desc"] = "asc",
    ) -> Call[list[Message]]:
        """The history; `before` / `after` (message ids) are the cursors."""
        params = _drop_empty({"limit": limit, "before": before, "after": after, "order": order})
        return Call("GET", f"/v1/agents/{agent_id}/messages", parse_as(_MESSAGES), params=params, retry=True)

    @endpoint
    def search(
        self,
        agent_id: str,
        query: str,
        *,
        top_k: int = 10,
        mode: Literal["hybrid", "vector", "keyword"] = "hybrid",
        roles: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Call[MessageSearchResult]:
        """Recall: the whole history (evicted messages too) searched by words and meaning."""
        params = _drop_empty(
            {
                "query": query,
                "top_k": top_k,
                "mode": mode,
                "roles": list(roles),
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
            }
        )
        return Call(
            "GET",
            f"/v1/agents/{agent_id}/messages/search",
            parse_as(_MESSAGE_SEARCH),
            params=params,
            retry=True,
        )

    @endpoint
    def ephemeral(
        self,
        agent: EphemeralAgent | Mapping[str, Any],
        messages: str | Sequence[MessageCreate | Mapping[str, Any]],
        *,
        memory_blocks: Sequence[BlockCreate | Mapping[str, Any]] = (),
        context: Sequence[Mapping[str, Any]] = (),
        max_steps: int = 0,
    ) -> Call[EphemeralResponse]:
        """A turn of an agent that exists for this request only: context in, answer out, nothing stored."""
        body = EphemeralRequest.model_validate(
            {
                "agent": agent,
                "messages": _turn(messages, max_steps).messages,
                "memory_blocks": list(memory_blocks),
                "context": list(context),
                "max_steps": max_steps,
            }
        )
        return Call(
            "POST", "/v1/agents/ephemeral/messages", parse_as(_EPHEMERAL), json=_body(body), retry=True
        )


class Runs(Resource[TransportT]):
    """Runs: one per turn."""

    @endpoint
    def get(self, run_id: str) -> Call[Run]:
        """One run: status, stop reason, usage, message ids."""
        return Call("GET", f"/v1/runs/{run_id}", parse_as(_RUN), retry=True)

    @endpoint
    def list(
        self, *, agent_id: str = "", status: RunStatus | None = None, limit: int = 50, page_token: str = ""
    ) -> Call[Page[Run]]:
        """One page of runs, newest first."""
        params = _drop_empty(
            {"agent_id": agent_id, "status": status, "limit": limit, "page_token": page_token}
        )
        return Call("GET", "/v1/runs", parse_page(_RUNS), params=params, retry=True)

    @endpoint
    def cancel(self, run_id: str) -> Call[Run]:
        """Cancels an unfinished run; a finished one comes back as it is."""
        return Call("POST", f"/v1/runs/{run_id}/cancel", parse_as(_RUN), retry=True)

    @endpoint
    def approve(self, run_id: str, *, approve: bool = True, reason: str = "") -> Call[SendMessageResponse]:
        """Approves (or denies, with `reason` shown to the model) the tool calls a run waits for; the turn
        resumes and this returns what it produced."""
        body = Approval(approve=approve, reason=reason)
        return Call("POST", f"/v1/runs/{run_id}/approval", parse_as(_SEND), json=_body(body))

    @endpoint
    def wait(self, run_id: str, *, timeout: float | None = 300.0, interval: float = 0.25) -> Call[Run]:
        """Polls the run until it is completed, failed, cancelled or awaiting approval."""
        done = Poll[Run](lambda run: run.status in FINISHED_RUN_STATUSES, interval, timeout)
        return Call("GET", f"/v1/runs/{run_id}", parse_as(_RUN), retry=True, poll=done)


class Blocks(Resource[TransportT]):
    """Core memory: an agent's blocks by label, and shared blocks."""

    @endpoint
    def list(self, agent_id: str) -> Call[list[Block]]:
        """The agent's core memory blocks."""
        return Call("GET", f"/v1/agents/{agent_id}/core-memory/blocks", parse_as(_BLOCKS), retry=True)

    @endpoint
    def get(self, agent_id: str, label: str) -> Call[Block]:
        """The agent's block with this label."""
        return Call("GET", f"/v1/agents/{agent_id}/core-memory/blocks/{label}", parse_as(_BLOCK), retry=True)

    @endpoint
    def update(
        self,
        agent_id: str,
        label: str,
        *,
        value: str | None = None,
        limit: int | None = None,
        description: str | None = None,
        read_only: bool | None = None,
    ) -> Call[Block]:
        """Changes the given fields of the agent's block with this label."""
        fields = {"value": value, "limit": limit, "description": description, "read_only": read_only}
        body = BlockUpdate.model_validate({k: v for k, v in fields.items() if v is not None})
        return Call(
            "PATCH", f"/v1/agents/{agent_id}/core-memory/blocks/{label}", parse_as(_BLOCK), json=_body(body)
        )

    @endpoint
    def create(
        self,
        *,
        label: str,
        value: str = "",
        limit: int | None = None,
        description: str = "",
        read_only: bool = False,
        agent_id: str = "",
    ) -> Call[Block]:
        """Creates a block to share between agents (attached to `agent_id` when given)."""
        body = BlockCreateRequest(
            label=label,
            value=value,
            limit=limit,
            description=description,
            read_only=read_only,
            agent_id=agent_id,
        )
        return Call("POST", "/v1/blocks", parse_as(_BLOCK), json=_body(body))

    @endpoint
    def delete(self, block_id: str) -> Call[None]:
        """Deletes a block and detaches it from every agent."""
        return Call("DELETE", f"/v1/blocks/{block_id}", parse_nothing, retry=True)

    @endpoint
    def attach(self, agent_id: str, block_id: str) -> Call[Block]:
        """Attaches an existing block to the agent."""
        path = f"/v1/agents/{agent_id}/core-memory/blocks/attach/{block_id}"
        return Call("PATCH", path, parse_as(_BLOCK), retry=True)

    @endpoint
    def detach(self, agent_id: str, block_id: str) -> Call[Block]:
        """Detaches a block from the agent; the block stays."""
        path = f"/v1/agents/{agent_id}/core-memory/blocks/detach/{block_id}"
        return Call("PATCH", path, parse_as(_BLOCK), retry=True)

    @endpoint
    def history(self, block_id: str, *, limit: int = 50, page_token: str = "") -> Call[Page[BlockVersion]]:
        """The kept versions of the block's value, newest first."""
        params = _drop_empty({"limit": limit, "page_token": page_token})
        return Call(
            "GET", f"/v1/blocks/{block_id}/history", parse_page(_BLOCK_VERSIONS), params=params, retry=True
        )

    @endpoint
    def undo(self, block_id: str) -> Call[Block]:
        """Undoes the latest edit of the block's value that is not undone yet."""
        return Call("POST", f"/v1/blocks/{block_id}/undo", parse_as(_BLOCK))

    @endpoint
    def redo(self, block_id: str) -> Call[Block]:
        """Applies again the edit undone last."""
        return Call("POST", f"/v1/blocks/{block_id}/redo", parse_as(_BLOCK))

    @endpoint
    def restore(self, block_id: str, version: int) -> Call[Block]:
        """Gives the block the value of one of its kept versions again."""
        body = BlockRestore(version=version)
        return Call("POST", f"/v1/blocks/{block_id}/restore", parse_as(_BLOCK), json=_body(body))


class Archival(Resource[TransportT]):
    """An agent's archival (long-term) memory."""

    @endpoint
    def insert(
        self,
        agent_id: str,
        text: str,
        *,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> Call[list[Passage]]:
        """Stores text (split into passages when long)."""
        body = PassageCreate(text=text, tags=list(tags), metadata=dict(metadata or {}), created_at=created_at)
        return Call("POST", f"/v1/agents/{agent_id}/archival-memory", parse_as(_PASSAGES), json=_body(body))

    @endpoint
    def search(
        self,
        agent_id: str,
        query: str,
        *,
        top_k: int = 10,
        tags: Sequence[str] = (),
        mode: Literal["hybrid", "vector", "keyword"] = "hybrid",
    ) -> Call[PassageSearchResult]:
        """Searches by meaning and words, best first."""
        params = _drop_empty({"query": query, "top_k": top_k, "tags": list(tags), "mode": mode})
        return Call(
            "GET",
            f"/v1/agents/{agent_id}/archival-memory/search",
            parse_as(_SEARCH),
            params=params,
            retry=True,
        )

    @endpoint
    def list(
        self, agent_id: str, *, limit: int = 50, page_token: str = "", order: Literal["asc", "desc"] = "asc"
    ) -> Call[Page[Passage]]:
        """One page of the agent's own passages."""
        params = _drop_empty({"limit": limit, "page_token": page_token, "order": order})
        return Call(
            "GET", f"/v1/agents/{agent_id}/archival-memory", parse_page(_PASSAGES), params=params, retry=True
        )

    @endpoint
    def delete(self, agent_id: str, passage_id: str) -> Call[None]:
        """Deletes one passage."""
        return Call(
            "DELETE", f"/v1/agents/{agent_id}/archival-memory/{passage_id}", parse_nothing, retry=True
        )


class Tools(Resource[TransportT]):
    """Tools: custom Python functions, MCP servers' tools, the built-in memory and control tools."""

    @endpoint
    def create(
        self,
        source_code: str,
        *,
        tags: Sequence[str] = (),
        pip_requirements: Sequence[str] = (),
        timeout_seconds: int = 0,
        return_char_limit: int = 0,
    ) -> Call[Tool]:
        """Creates a tool from Python source defining one typed, documented function."""
        body = ToolCreate(
            source_code=source_code,
            tags=list(tags),
            pip_requirements=list(pip_requirements),
            timeout_seconds=timeout_seconds,
            return_char_limit=return_char_limit,
        )
        return Call("POST", "/v1/tools", parse_as(_TOOL), json=body.model_dump(mode="json"))

    @endpoint
    def list(
        self,
        *,
        limit: int = 50,
        page_token: str = "",
        names: Sequence[str] = (),
        tags: Sequence[str] = (),
        tool_type: ToolType | None = None,
        mcp_server_id: str = "",
    ) -> Call[Page[Tool]]:
        """One page of tools, by name."""
        params = _drop_empty(
            {
                "limit": limit,
                "page_token": page_token,
                "name": list(names),
                "tags": list(tags),
                "tool_type": tool_type,
                "mcp_server_id": mcp_server_id,
            }
        )
        return Call("GET", "/v1/tools", parse_page(_TOOLS), params=params, retry=True)

    @endpoint
    def get(self, tool_id: str) -> Call[Tool]:
        """One tool."""
        return Call("GET", f"/v1/tools/{tool_id}", parse_as(_TOOL), retry=True)

    @endpoint
    def update(self, tool_id: str, /, **fields: Any) -> Call[Tool]:
        """Changes the given `ToolUpdate` fields (source_code, tags, pip_requirements, ...); the rest stay."""
        body = ToolUpdate.model_validate(fields)
        return Call("PATCH", f"/v1/tools/{tool_id}", parse_as(_TOOL), json=_body(body))

    @endpoint
    def delete(self, tool_id: str) -> Call[None]:
        """Deletes a custom tool."""
        return Call("DELETE", f"/v1/tools/{tool_id}", parse_nothing, retry=True)

    @endpoint
    def list_for_agent(self, agent_id: str) -> Call[builtins.list[Tool]]:
        """The agent's tools."""
        return Call("GET", f"/v1/agents/{agent_id}/tools", parse_as(_TOOL_LIST), retry=True)

    @endpoint
    def attach(self, agent_id: str, tool_id: str) -> Call[Agent]:
        """Gives the agent the tool; returns the agent."""
        return Call("PATCH", f"/v1/agents/{agent_id}/tools/attach/{tool_id}", parse_as(_AGENT), retry=True)

    @endpoint
    def detach(self, agent_id: str, tool_id: str) -> Call[Agent]:
        """Takes the tool away from the agent; returns the agent."""
        return Call("PATCH", f"/v1/agents/{agent_id}/tools/detach/{tool_id}", parse_as(_AGENT), retry=True)

    @endpoint
    def run(
        self, tool_id: str, arguments: Mapping[str, Any] | None = None, *, agent_id: str = ""
    ) -> Call[ToolRunResult]:
        """Runs the tool directly; a failing tool is a result with status 'error', not an exception."""
        body = ToolRun(arguments=dict(arguments or {}), agent_id=agent_id)
        return Call("POST", f"/v1/tools/{tool_id}/run", parse_as(_TOOL_RUN), json=_body(body))


class ToolEnvironments(Resource[TransportT]):
    """Environment variables an agent's tools run with (secrets: values are never returned)."""

    @endpoint
    def get(self, agent_id: str) -> Call[ToolEnvironment]:
        """The names of the agent's tool environment variables."""
        return Call("GET", f"/v1/agents/{agent_id}/tool-environment", parse_as(_TOOL_ENV), retry=True)

    @endpoint
    def update(
        self, agent_id: str, *, set: Mapping[str, str] | None = None, unset: Sequence[str] = ()
    ) -> Call[ToolEnvironment]:
        """Sets (name -> value) and removes variables; answers the names there are then."""
        body = ToolEnvironmentUpdate(set=dict(set or {}), unset=list(unset))
        return Call("PATCH", f"/v1/agents/{agent_id}/tool-environment", parse_as(_TOOL_ENV), json=_body(body))


class McpServers(Resource[TransportT]):
    """MCP servers whose tools agents may call."""

    @endpoint
    def create(
        self,
        name: str,
        *,
        transport: Literal["stdio", "streamable_http"],
        command: str = "",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        url: str = "",
        headers: Mapping[str, str] | None = None,
        tool_prefix: str = "",
    ) -> Call[McpServerWithTools]:
        """Registers a server (stdio command or streamable HTTP URL); it is connected to and its tools listed."""
        body = McpServerCreate(
            name=name,
            transport=transport,
            command=command,
            args=list(args),
            env=dict(env or {}),
            cwd=cwd,
            url=url,
            headers=dict(headers or {}),
            tool_prefix=tool_prefix,
        )
        return Call("POST", "/v1/mcp-servers", parse_as(_MCP_WITH_TOOLS), json=_body(body))

    @endpoint
    def list(self, *, limit: int = 50, page_token: str = "") -> Call[Page[McpServer]]:
        """One page of servers, by name."""
        params = _drop_empty({"limit": limit, "page_token": page_token})
        return Call("GET", "/v1/mcp-servers", parse_page(_MCP_SERVERS), params=params, retry=True)

    @endpoint
    def get(self, mcp_server_id: str) -> Call[McpServer]:
        """One server (secrets by name only)."""
        return Call("GET", f"/v1/mcp-servers/{mcp_server_id}", parse_as(_MCP_SERVER), retry=True)

    @endpoint
    def delete(self, mcp_server_id: str) -> Call[None]:
        """Deletes a server and its tools."""
        return Call("DELETE", f"/v1/mcp-servers/{mcp_server_id}", parse_nothing, retry=True)

    @endpoint
    def refresh(self, mcp_server_id: str) -> Call[McpServerWithTools]:
        """Lists the server's tools again (tools that stay keep their ids)."""
        path = f"/v1/mcp-servers/{mcp_server_id}/refresh"
        return Call("POST", path, parse_as(_MCP_WITH_TOOLS), retry=True)

    @endpoint
    def tools(self, mcp_server_id: str) -> Call[builtins.list[Tool]]:
        """The server's tools."""
        return Call("GET", f"/v1/mcp-servers/{mcp_server_id}/tools", parse_as(_TOOL_LIST), retry=True)


class Models(Resource[TransportT]):
    """The models the mesh can reach."""

    @endpoint
    def list(self, *, provider: str = "", include_provider_models: bool = False) -> Call[ModelList]:
        """The models agents can use, with context windows; asking the providers too is slower."""
        params = _drop_empty(
            {"provider": provider, "include_provider_models": "true" if include_provider_models else ""}
        )
        return Call("GET", "/v1/models", parse_as(_MODEL_LIST), params=params, retry=True)


class Usage(Resource[TransportT]):
    """Tokens the organization's model calls spent."""

    @endpoint
    def get(
        self,
        *,
        group_by: Sequence[Literal["agent", "model", "day"]] = (),
        agent_id: str = "",
        model: str = "",
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Call[list[UsageRow]]:
        """Token sums (chat and embeddings), grouped by agent, model and/or UTC day."""
        params = _drop_empty(
            {
                "group_by": list(group_by),
                "agent_id": agent_id,
                "model": model,
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
            }
        )
        return Call("GET", "/v1/usage", parse_as(_USAGE_ROWS), params=params, retry=True)


class Sources(Resource[TransportT]):
    """Sources: files whose passages agents can search."""

    @endpoint
    def create(self, name: str, *, description: str = "", embedding_model: str = "") -> Call[Source]:
        """Creates a source (its embedding model is fixed now; the server default when empty)."""
        body = SourceCreate(name=name, description=description, embedding_model=embedding_model)
        return Call("POST", "/v1/sources", parse_as(_SOURCE), json=_body(body))

    @endpoint
    def list(self, *, limit: int = 50, page_token: str = "") -> Call[Page[Source]]:
        """One page of sources."""
        params = _drop_empty({"limit": limit, "page_token": page_token})
        return Call("GET", "/v1/sources", parse_page(_SOURCES), params=params, retry=True)

    @endpoint
    def get(self, source_id: str) -> Call[Source]:
        """One source."""
        return Call("GET", f"/v1/sources/{source_id}", parse_as(_SOURCE), retry=True)

    @endpoint
    def delete(self, source_id: str) -> Call[None]:
        """Deletes a source with its files and passages."""
        return Call("DELETE", f"/v1/sources/{source_id}", parse_nothing, retry=True)

    @endpoint
    def update(self, source_id: str, /, **fields: Any) -> Call[Source]:
        """Changes the given `SourceUpdate` fields (name, description, metadata)."""
        body = SourceUpdate.model_validate(fields)
        return Call("PATCH", f"/v1/sources/{source_id}", parse_as(_SOURCE), json=_body(body))

    @endpoint
    def upload(
        self,
        source_id: str,
        file: Path | bytes,
        *,
        file_name: str = "",
        content_type: str = "application/octet-stream",
        progress: Callable[[int, int], None] | None = None,
    ) -> Call[Upload]:
        """Uploads a file (txt, md, html, pdf); it is processed in the background (see `job`, `wait_job`).

        `progress(sent, total)` is called as the request body goes out (bytes, multipart framing included).
        """
        content = file.read_bytes() if isinstance(file, Path) else file
        name = file_name or (file.name if isinstance(file, Path) else "upload")
        path = f"/v1/sources/{source_id}/upload"
        if progress is None:
            return Call("POST", path, parse_as(_UPLOAD), files={"file": (name, content, content_type)})
        body = MultipartUpload("file", name, content, content_type)
        return Call(
            "POST",
            path,
            parse_as(_UPLOAD),
            content=lambda: body.chunks(progress),
            headers=body.headers(),
        )

    @endpoint
    def files(self, source_id: str, *, limit: int = 50, page_token: str = "") -> Call[Page[File]]:
        """One page of the source's files, with their processing status."""
        params = _drop_empty({"limit": limit, "page_token": page_token})
        return Call("GET", f"/v1/sources/{source_id}/files", parse_page(_FILES), params=params, retry=True)

    @endpoint
    def delete_file(self, source_id: str, file_id: str) -> Call[None]:
        """Deletes a file and its passages."""
        return Call("DELETE", f"/v1/sources/{source_id}/files/{file_id}", parse_nothing, retry=True)

    @endpoint
    def job(self, job_id: str) -> Call[Job]:
        """A file-processing job: status, progress, error."""
        return Call("GET", f"/v1/jobs/{job_id}", parse_as(_JOB), retry=True)

    @endpoint
    def wait_job(self, job_id: str, *, timeout: float | None = 300.0, interval: float = 0.25) -> Call[Job]:
        """Polls the job until it has completed or failed."""
        done = Poll[Job](lambda job: job.status in ("completed", "failed"), interval, timeout)
        return Call("GET", f"/v1/jobs/{job_id}", parse_as(_JOB), retry=True, poll=done)

    @endpoint
    def attach(self, agent_id: str, source_id: str) -> Call[Source]:
        """Makes the source's passages searchable by the agent."""
        return Call(
            "PATCH", f"/v1/agents/{agent_id}/sources/attach/{source_id}", parse_as(_SOURCE), retry=True
        )

    @endpoint
    def detach(self, agent_id: str, source_id: str) -> Call[Source]:
        """Detaches the source from the agent."""
        return Call(
            "PATCH", f"/v1/agents/{agent_id}/sources/detach/{source_id}", parse_as(_SOURCE), retry=True
        )


class Organizations(Resource[TransportT]):
    """Organizations (tenants): the root key only."""

    @endpoint
    def create(self, name: str) -> Call[Organization]:
        """Creates an organization; give it users and keys with `users` and `api_keys`."""
        body = OrganizationCreate(name=name)
        return Call("POST", "/v1/organizations", parse_as(_ORGANIZATION), json=_body(body))

    @endpoint
    def list(self, *, limit: int = 50, page_token: str = "") -> Call[Page[Organization]]:
        """One page of organizations, oldest first."""
        params = _drop_empty({"limit": limit, "page_token": page_token})
        return Call("GET", "/v1/organizations", parse_page(_ORGANIZATIONS), params=params, retry=True)

    @endpoint
    def get(self, org_id: str) -> Call[Organization]:
        """One organization."""
        return Call("GET", f"/v1/organizations/{org_id}", parse_as(_ORGANIZATION), retry=True)

    @endpoint
    def delete(self, org_id: str) -> Call[None]:
        """Deletes an organization with its users and keys (refused while it has agents)."""
        return Call("DELETE", f"/v1/organizations/{org_id}", parse_nothing, retry=True)


class Users(Resource[TransportT]):
    """Users of the caller's organization (admin keys; the root key may name `org_id`)."""

    @endpoint
    def create(self, name: str, *, org_id: str = "") -> Call[User]:
        """Creates a user."""
        body = UserCreate(name=name, org_id=org_id)
        return Call("POST", "/v1/users", parse_as(_USER), json=_body(body))

    @endpoint
    def list(self, *, org_id: str = "", limit: int = 50, page_token: str = "") -> Call[Page[User]]:
        """One page of users, oldest first."""
        params = _drop_empty({"org_id": org_id, "limit": limit, "page_token": page_token})
        return Call("GET", "/v1/users", parse_page(_USERS), params=params, retry=True)

    @endpoint
    def get(self, user_id: str, *, org_id: str = "") -> Call[User]:
        """One user."""
        params = _drop_empty({"org_id": org_id})
        return Call("GET", f"/v1/users/{user_id}", parse_as(_USER), params=params, retry=True)

    @endpoint
    def delete(self, user_id: str, *, org_id: str = "") -> Call[None]:
        """Deletes a user with its API keys."""
        params = _drop_empty({"org_id": org_id})
        return Call("DELETE", f"/v1/users/{user_id}", parse_nothing, params=params, retry=True)


class ApiKeys(Resource[TransportT]):
    """API keys of the caller's organization (admin keys; the root key may name `org_id`)."""

    @endpoint
    def create(
        self,
        name: str,
        *,
        role: Literal["admin", "member"] = "member",
        user_id: str = "",
        org_id: str = "",
    ) -> Call[ApiKeyCreated]:
        """Creates a key; its `secret` is in this answer only."""
        body = ApiKeyCreate(name=name, role=role, user_id=user_id, org_id=org_id)
        return Call("POST", "/v1/api-keys", parse_as(_API_KEY_CREATED), json=_body(body))

    @endpoint
    def list(self, *, org_id: str = "", limit: int = 50, page_token: str = "") -> Call[Page[ApiKey]]:
        """One page of active keys, without secrets."""
        params = _drop_empty({"org_id": org_id, "limit": limit, "page_token": page_token})
        return Call("GET", "/v1/api-keys", parse_page(_API_KEYS), params=params, retry=True)

    @endpoint
    def get(self, key_id: str, *, org_id: str = "") -> Call[ApiKey]:
        """One key, without its secret."""
        params = _drop_empty({"org_id": org_id})
        return Call("GET", f"/v1/api-keys/{key_id}", parse_as(_API_KEY), params=params, retry=True)

    @endpoint
    def revoke(self, key_id: str, *, org_id: str = "") -> Call[None]:
        """Revokes a key (gateways honour it within their key cache time)."""
        params = _drop_empty({"org_id": org_id})
        return Call("DELETE", f"/v1/api-keys/{key_id}", parse_nothing, params=params, retry=True)


class Batches(Resource[TransportT]):
    """Many turns run in the background, through the provider's batch API where it has one."""

    @endpoint
    def create(
        self,
        turns: Sequence[BatchTurn | Mapping[str, Any]],
        *,
        mode: Literal["auto", "concurrent", "provider"] = "auto",
    ) -> Call[Batch]:
        """Submits the turns (one agent's turns run in order); see `get` and `wait`."""
        body = BatchCreate.model_validate({"turns": list(turns), "mode": mode})
        return Call("POST", "/v1/batches", parse_as(_BATCH), json=_body(body))

    @endpoint
    def get(self, batch_id: str) -> Call[Batch]:
        """A batch with the current state of its runs."""
        return Call("GET", f"/v1/batches/{batch_id}", parse_as(_BATCH), retry=True)

    @endpoint
    def wait(self, batch_id: str, *, timeout: float | None = None, interval: float = 1.0) -> Call[Batch]:
        """Polls the batch until every run has finished (provider batches can take hours: no timeout by default)."""
        done = Poll[Batch](lambda batch: batch.status == "completed", interval, timeout)
        return Call("GET", f"/v1/batches/{batch_id}", parse_as(_BATCH), retry=True, poll=done)


class Groups(Resource[TransportT]):
    """Groups of agents that answer together."""

    @endpoint
    def create(
        self,
        *,
        name: str,
        agent_ids: Sequence[str],
        manager: Mapping[str, Any] | None = None,
        shared_block_ids: Sequence[str] = (),
        shared_blocks: Sequence[BlockCreate | Mapping[str, Any]] = (),
        description: str = "",
    ) -> Call[Group]:
        """Creates a group; `manager` is {"type", "manager_agent_id", "max_turns", ...}."""
        body = GroupCreate.model_validate(
            {
                "name": name,
                "agent_ids": list(agent_ids),
                "manager": dict(manager or {}),
                "shared_block_ids": list(shared_block_ids),
                "shared_blocks": list(shared_blocks),
                "description": description,
            }
        )
        return Call("POST", "/v1/groups", parse_as(_GROUP), json=_body(body))

    @endpoint
    def list(self, *, limit: int = 50, page_token: str = "") -> Call[Page[Group]]:
        """One page of groups, newest first."""
        params = _drop_empty({"limit": limit, "page_token": page_token})
        return Call("GET", "/v1/groups", parse_page(_GROUPS), params=params, retry=True)

    @endpoint
    def get(self, group_id: str) -> Call[Group]:
        """One group."""
        return Call("GET", f"/v1/groups/{group_id}", parse_as(_GROUP), retry=True)

    @endpoint
    def delete(self, group_id: str) -> Call[None]:
        """Deletes a group (its agents stay)."""
        return Call("DELETE", f"/v1/groups/{group_id}", parse_nothing, retry=True)

    @endpoint
    def send(
        self,
        group_id: str,
        messages: str | Sequence[MessageCreate | Mapping[str, Any]],
        *,
        max_turns: int = 0,
        idempotency_key: str | None = None,
    ) -> Call[GroupMessageResponse]:
        """Sends a message to the group; a fresh idempotency key makes retries safe."""
        body = GroupMessageRequest.model_validate(
            {"messages": _turn(messages, 0).messages, "max_turns": max_turns}
        )
        return Call(
            "POST",
            f"/v1/groups/{group_id}/messages",
            parse_as(_GROUP_ANSWER),
            json=_body(body),
            headers=_idempotency(idempotency_key),
            default_idempotency_key=str(uuid.uuid4()),
            retry=True,
        )

    @endpoint
    def cancel(self, group_id: str, group_run_id: str) -> Call[GroupRun]:
        """Cancels a group run that has not finished."""
        path = f"/v1/groups/{group_id}/runs/{group_run_id}/cancel"
        return Call("POST", path, parse_as(_GROUP_RUN), retry=True)

    @endpoint
    def export(self, group_id: str, *, include_passages: bool = False) -> Call[str]:
        """The group with its agents as an agent file (JSON text)."""
        params = {"include_passages": "true"} if include_passages else None
        return Call("GET", f"/v1/groups/{group_id}/export", _text, params=params, retry=True)

    @endpoint
    def import_file(self, agent_file: str | bytes) -> Call[Group]:
        """Creates the group of an agent file with new agents."""
        content = agent_file.encode() if isinstance(agent_file, str) else agent_file
        files = {"file": ("group.json", content, "application/json")}
        return Call("POST", "/v1/groups/import", parse_as(_GROUP), files=files)


class Identities(Resource[TransportT]):
    """The end users of your application, their agents, and the blocks those agents share."""

    @endpoint
    def create(
        self,
        identifier_key: str,
        *,
        name: str = "",
        identity_type: IdentityType = "user",
        properties: Mapping[str, Any] | None = None,
        agent_ids: Sequence[str] = (),
        block_ids: Sequence[str] = (),
    ) -> Call[Identity]:
        """Creates an end user known by your `identifier_key`, with its agents and blocks."""
        body = IdentityCreate(
            identifier_key=identifier_key,
            name=name,
            identity_type=identity_type,
            properties=dict(properties or {}),
            agent_ids=list(agent_ids),
            block_ids=list(block_ids),
        )
        return Call("POST", "/v1/identities", parse_as(_IDENTITY), json=_body(body))

    @endpoint
    def list(
        self,
        *,
        identifier_key: str = "",
        identity_type: IdentityType | None = None,
        agent_id: str = "",
        limit: int = 50,
        page_token: str = "",
    ) -> Call[Page[Identity]]:
        """One page of end users, newest first."""
        params = _drop_empty(
            {
                "identifier_key": identifier_key,
                "identity_type": identity_type,
                "agent_id": agent_id,
                "limit": limit,
                "page_token": page_token,
            }
        )
        return Call("GET", "/v1/identities", parse_page(_IDENTITIES), params=params, retry=True)

    @endpoint
    def get(self, identity_id: str) -> Call[Identity]:
        """One end user."""
        return Call("GET", f"/v1/identities/{identity_id}", parse_as(_IDENTITY), retry=True)

    @endpoint
    def update(self, identity_id: str, /, **fields: Any) -> Call[Identity]:
        """Changes the given `IdentityUpdate` fields (identifier_key, name, identity_type, properties)."""
        body = IdentityUpdate.model_validate(fields)
        return Call("PATCH", f"/v1/identities/{identity_id}", parse_as(_IDENTITY), json=_body(body))

    @endpoint
    def delete(self, identity_id: str) -> Call[None]:
        """Deletes an end user; its blocks leave its agents (both stay)."""
        return Call("DELETE", f"/v1/identities/{identity_id}", parse_nothing, retry=True)

    @endpoint
    def agents(self, identity_id: str, *, limit: int = 50, page_token: str = "") -> Call[Page[Agent]]:
        """One page of the end user's agents, newest first."""
        params = _drop_empty({"limit": limit, "page_token": page_token})
        path = f"/v1/identities/{identity_id}/agents"
        return Call("GET", path, parse_page(_AGENTS), params=params, retry=True)

    @endpoint
    def attach_agent(self, identity_id: str, agent_id: str) -> Call[Identity]:
        """Gives the end user an agent, which gets the end user's blocks."""
        path = f"/v1/identities/{identity_id}/agents/attach/{agent_id}"
        return Call("PATCH", path, parse_as(_IDENTITY), retry=True)

    @endpoint
    def detach_agent(self, identity_id: str, agent_id: str) -> Call[Identity]:
        """Takes an agent from the end user; its blocks leave the agent."""
        path = f"/v1/identities/{identity_id}/agents/detach/{agent_id}"
        return Call("PATCH", path, parse_as(_IDENTITY), retry=True)

    @endpoint
    def attach_block(self, identity_id: str, block_id: str) -> Call[Identity]:
        """Gives the end user a block, attached to every one of its agents."""
        path = f"/v1/identities/{identity_id}/blocks/attach/{block_id}"
        return Call("PATCH", path, parse_as(_IDENTITY), retry=True)

    @endpoint
    def detach_block(self, identity_id: str, block_id: str) -> Call[Identity]:
        """Takes a block from the end user; it leaves the end user's agents."""
        path = f"/v1/identities/{identity_id}/blocks/detach/{block_id}"
        return Call("PATCH", path, parse_as(_IDENTITY), retry=True)
