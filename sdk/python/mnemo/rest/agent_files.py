"""Agent files: one or more agents (and groups of them) as one versioned JSON document.

`GET /v1/agents/{id}/export` and `GET /v1/groups/{id}/export` answer one; `POST /v1/agents/import` and
`POST /v1/groups/import` take one and create everything in it anew, on any mnemo server. The JSON Schema
of the current version is published as docs/schemas/agent-file.v1.json (`python -m mnemo.rest.agent_files`
prints it). Ids inside a file are the file's own ("agent-0", "block-0", ...): they only link its parts.

`load` reads a document of any version this client knows, upgrading older ones (version 0: one agent with
inline memory, tools and a chat-style history) and refusing newer ones with `UnsupportedVersion`.
Tool rules travel as they are stored, whatever their type: the importing server checks them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT: Literal["mnemo-agent-file"] = "mnemo-agent-file"
VERSION: Literal[1] = 1


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileBlock(_Part):
    """A core memory block; agents that list the same block id share it."""

    id: str
    label: str
    value: str = ""
    limit: int = Field(default=0, ge=0, description="Most characters; 0 = the server default.")
    description: str = ""
    read_only: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class McpToolRef(_Part):
    """A tool of an MCP server, found on import by the server's name (it must be registered there)."""

    server_name: str
    tool_name: str = Field(description="The tool's name on its MCP server.")


class FileTool(_Part):
    """A tool: built-ins by name, custom tools with their source, MCP tools by reference."""

    id: str
    name: str
    type: Literal["memory", "control", "custom", "mcp"]
    description: str = ""
    json_schema: dict[str, Any] = Field(default_factory=dict)
    source_code: str = ""
    tags: list[str] = Field(default_factory=list)
    return_char_limit: int = Field(default=0, ge=0)
    pip_requirements: list[str] = Field(default_factory=list)
    timeout_seconds: int = Field(default=0, ge=0)
    mcp: McpToolRef | None = None


class _MessageBase(_Part):
    run: str = Field(description="The turn (file-local run id) that stored the message.")
    step: int = Field(default=0, ge=0)
    created_at: datetime | None = None


class UserItem(_MessageBase):
    role: Literal["user"] = "user"
    text: str
    name: str = ""


class SystemItem(_MessageBase):
    role: Literal["system"] = "system"
    text: str


class AssistantItem(_MessageBase):
    role: Literal["assistant"] = "assistant"
    text: str


class ReasoningItem(_MessageBase):
    role: Literal["reasoning"] = "reasoning"
    text: str
    signature: str = ""


class ToolCallItem(_MessageBase):
    role: Literal["tool_call"] = "tool_call"
    tool_call_id: str
    name: str
    arguments: str


class ToolReturnItem(_MessageBase):
    role: Literal["tool_return"] = "tool_return"
    tool_call_id: str
    name: str
    content: str
    status: Literal["success", "error"] = "success"
    stdout: str = ""
    stderr: str = ""


class EventItem(_MessageBase):
    role: Literal["event"] = "event"
    event_type: Literal["summary", "truncation", "memory_pressure"]
    text: str
    evicted_count: int = Field(default=0, ge=0)


FileMessage = Annotated[
    UserItem | SystemItem | AssistantItem | ReasoningItem | ToolCallItem | ToolReturnItem | EventItem,
    Field(discriminator="role"),
]


class FileContext(_Part):
    """Which messages the agent sees: from `start` on, after the summary message `summary` (indexes)."""

    start: int | None = Field(default=None, ge=0, description="Index of the first message in context.")
    summary: int | None = Field(default=None, ge=0, description="Index of the summary shown in front.")


class FilePassage(_Part):
    """An archival passage (embedded again on import, with the agent's embedding model)."""

    text: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    speaker: str = ""
    created_at: datetime | None = None


class FileSource(_Part):
    """A source an agent searches; only a reference: on import it is attached if one of that name exists."""

    id: str
    name: str
    description: str = ""


class FileAgent(_Part):
    """One agent: its configuration, model settings, memory, tools, rules and history."""

    id: str
    name: str
    model: str
    description: str = ""
    system: str = ""
    agent_type: Literal["standard", "voice", "sleeptime"] = "standard"
    embedding_model: str = ""
    context_window: int = Field(default=0, ge=0)
    max_steps: int = Field(default=0, ge=0)
    llm_options: dict[str, Any] = Field(default_factory=dict)
    summarizer_model: str = ""
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tool_rules: list[dict[str, Any]] = Field(
        default_factory=list, description="As the server stores them: {'tool_name', 'type', ...} each."
    )
    memory_tool_set: Literal["classic", "lines"] = Field(
        default="classic", description="The built-in tools that edit its core memory."
    )
    sleeptime: dict[str, Any] = Field(default_factory=dict, description="{'enabled', 'frequency', 'model'}.")
    block_ids: list[str] = Field(default_factory=list)
    tool_ids: list[str] = Field(default_factory=list)
    source_ids: list[str] = Field(default_factory=list)
    messages: list[FileMessage] = Field(default_factory=list)
    context: FileContext = Field(default_factory=FileContext)
    passages: list[FilePassage] | None = Field(default=None, description="Absent when not exported.")


class FileGroup(_Part):
    """A group of the file's agents."""

    id: str
    name: str
    description: str = ""
    manager_type: Literal["round_robin", "supervisor", "dynamic", "sleeptime"] = "round_robin"
    manager_agent_id: str | None = None
    agent_ids: list[str] = Field(min_length=1)
    max_turns: int = Field(default=0, ge=0)
    termination_token: str = ""
    sleeptime_frequency: int = Field(default=0, ge=0)
    shared_block_ids: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AgentFile(_Part):
    """A mnemo agent file."""

    format: Literal["mnemo-agent-file"] = FORMAT
    version: Literal[1] = VERSION
    exported_at: datetime | None = None
    agents: list[FileAgent] = Field(min_length=1, description="The first is the agent that was exported.")
    blocks: list[FileBlock] = Field(default_factory=list)
    tools: list[FileTool] = Field(default_factory=list)
    sources: list[FileSource] = Field(default_factory=list)
    groups: list[FileGroup] = Field(default_factory=list)


class UnsupportedVersion(ValueError):
    """A file of a version this code does not know (newer, or not a version at all)."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"agent file version {version!r} is not supported; this server reads versions 0 to {VERSION}"
        )
        self.version = version


def _v0_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Version 0's chat-style history as typed messages, one turn per user message."""
    messages: list[dict[str, Any]] = []
    run = -1
    for item in items:
        role = item.get("role")
        content = str(item.get("content") or "")
        if role == "user":
            run += 1
            messages.append({"role": "user", "text": content, "name": item.get("name") or ""})
        elif role == "system":
            messages.append({"role": "system", "text": content})
        elif role == "assistant":
            if content:
                messages.append({"role": "assistant", "text": content})
            for call in item.get("tool_calls") or []:
                messages.append(
                    {
                        "role": "tool_call",
                        "tool_call_id": call["id"],
                        "name": call["name"],
                        "arguments": call.get("arguments", "{}"),
                    }
                )
        elif role == "tool":
            messages.append(
                {
                    "role": "tool_return",
                    "tool_call_id": item.get("tool_call_id", ""),
                    "name": item.get("name", ""),
                    "content": content,
                }
            )
        else:
            raise ValueError(f"version 0 history: unknown role {role!r}")
        messages[-1]["run"] = f"run-{max(run, 0)}"
    # Each message of a turn after its first is a step of its own, as a chat history has no steps.
    steps: dict[str, int] = {}
    for message in messages:
        message["step"] = steps.get(message["run"], -1) + 1
        steps[message["run"]] = message["step"]
    return messages


def _upgrade_v0(document: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (one agent, inline memory and tools, chat history) to version 1."""
    agent = dict(document.get("agent") or {})
    blocks = [
        {"id": f"block-{i}", **{k: v for k, v in block.items() if k != "id"}}
        for i, block in enumerate(agent.pop("memory", []))
    ]
    tools = []
    for i, tool in enumerate(agent.pop("tools", [])):
        kind = "custom" if tool.get("source_code") else "memory"
        tools.append({"id": f"tool-{i}", "type": kind, **{k: v for k, v in tool.items() if k != "id"}})
    messages = _v0_messages(agent.pop("messages", []))
    return {
        "format": FORMAT,
        "version": 1,
        "exported_at": document.get("exported_at"),
        "agents": [
            {
                **agent,
                "id": "agent-0",
                "block_ids": [b["id"] for b in blocks],
                "tool_ids": [t["id"] for t in tools],
                "messages": messages,
                "context": {"start": 0 if messages else None},
            }
        ],
        "blocks": blocks,
        "tools": tools,
    }


_UPGRADES = {0: _upgrade_v0}


def load(document: Any) -> AgentFile:
    """An agent file of any known version, upgraded to the current one (pydantic's ValidationError when a
    part is malformed, UnsupportedVersion when the version is unknown)."""
    if not isinstance(document, dict):
        raise TypeError("an agent file is a JSON object")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= VERSION:
        raise UnsupportedVersion(version)
    while version < VERSION:
        document = _UPGRADES[version](document)
        version += 1
    return AgentFile.model_validate(document)


def loads(text: str | bytes) -> AgentFile:
    """An agent file from its JSON text (see `load`)."""
    return load(json.loads(text))


def schema() -> dict[str, Any]:
    """The JSON Schema of the current version (docs/schemas/agent-file.v1.json)."""
    generated = AgentFile.model_json_schema()
    generated["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    generated["$id"] = "https://mnemo.dev/schemas/agent-file.v1.json"
    return generated


if __name__ == "__main__":
    print(json.dumps(schema(), indent=2, sort_keys=True))
