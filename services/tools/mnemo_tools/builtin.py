"""Built-in tools every agent can be given. Memory tools run against the memory service; the agent-to-agent
(control) tools are run by the agent service itself (mnemo_agent.turn.messaging)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mnemo.tools.v1 import tool_pb2


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    """A built-in tool definition; its id is fixed so agents keep it across upgrades."""

    name: str
    description: str
    parameters: dict[str, Any]
    tool_type: tool_pb2.ToolType.ValueType

    @property
    def id(self) -> str:
        return f"tool-builtin-{self.name}"

    @property
    def json_schema(self) -> str:
        return json.dumps(self.parameters, separators=(",", ":"))


def _object(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


BUILTIN_TOOLS: tuple[BuiltinTool, ...] = (
    BuiltinTool(
        name="core_memory_append",
        description=(
            "Append text to one of your core memory blocks (for example 'human' or 'persona'). "
            "Core memory is always in your context; use it for facts you must keep in mind. "
            "Fails if the block would exceed its character limit."
        ),
        parameters=_object(
            {
                "label": {"type": "string", "description": "Label of the block to edit, e.g. 'human'."},
                "content": {"type": "string", "description": "Text to append on a new line."},
            },
            ["label", "content"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="core_memory_replace",
        description=(
            "Replace text in one of your core memory blocks. old_content must match the block's text "
            "exactly; every occurrence is replaced. Use an empty new_content to delete text."
        ),
        parameters=_object(
            {
                "label": {"type": "string", "description": "Label of the block to edit, e.g. 'human'."},
                "old_content": {"type": "string", "description": "Exact text to find in the block."},
                "new_content": {"type": "string", "description": "Text to put in its place."},
            },
            ["label", "old_content", "new_content"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="memory_insert",
        description=(
            "Insert lines of text into one of your core memory blocks (for example 'human' or 'persona'), "
            "after the line numbered insert_line as your memory blocks show it (0 puts them first; leave it "
            "out to add them at the end). Fails if the block would exceed its character limit."
        ),
        parameters=_object(
            {
                "label": {"type": "string", "description": "Label of the block to edit, e.g. 'human'."},
                "new_str": {"type": "string", "description": "The text to insert, one or more lines."},
                "insert_line": {
                    "type": "integer",
                    "description": "Number of the line after which to insert (0: at the top; omit: at the end).",
                },
            },
            ["label", "new_str"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="memory_replace",
        description=(
            "Replace text in one of your core memory blocks. old_str must match the block's text exactly and "
            "occur exactly once (add surrounding words when it occurs more often); leave out the line numbers "
            "shown before each line. Use an empty new_str to delete the text."
        ),
        parameters=_object(
            {
                "label": {"type": "string", "description": "Label of the block to edit, e.g. 'human'."},
                "old_str": {"type": "string", "description": "Exact text to replace; must occur once."},
                "new_str": {"type": "string", "description": "Text to put in its place."},
            },
            ["label", "old_str", "new_str"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="memory_rethink",
        description=(
            "Rewrite one of your core memory blocks whole, to reorganise or condense it: new_memory replaces "
            "everything the block holds (without line numbers). Fails if it exceeds the block's limit."
        ),
        parameters=_object(
            {
                "label": {"type": "string", "description": "Label of the block to rewrite, e.g. 'human'."},
                "new_memory": {"type": "string", "description": "The block's complete new text."},
            },
            ["label", "new_memory"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="memory_finish_edits",
        description="Call when you have finished editing your memory: it ends your turn.",
        parameters=_object({}, []),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="archival_memory_insert",
        description=(
            "Save text to your archival memory, a long-term store outside your context that you can search "
            "later by meaning. Use it for facts, events and details worth remembering that do not belong in "
            "core memory. Write self-contained text (say who and when), since it will be read out of context."
        ),
        parameters=_object(
            {
                "content": {"type": "string", "description": "The text to remember."},
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Optional tags to filter searches by later, e.g. ['preferences'].",
                },
            },
            ["content"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="archival_memory_search",
        description=(
            "Search your archival memory (and the documents of sources attached to you) by meaning and by "
            "words. Use it before saying you do not know something you might have saved earlier."
        ),
        parameters=_object(
            {
                "query": {"type": "string", "description": "What to look for, in natural language."},
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Only passages with any of these tags.",
                },
                "top_k": {"type": "integer", "description": "How many results to return (1-50, default 5)."},
            },
            ["query"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="conversation_search",
        description=(
            "Search your whole conversation history, including messages no longer in your context, by "
            "meaning and by words. Use it to recall what was said earlier."
        ),
        parameters=_object(
            {
                "query": {"type": "string", "description": "What to look for, in natural language."},
                "roles": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "enum": ["user", "assistant", "system", "reasoning", "event"],
                    },
                    "description": "Only messages of these roles.",
                },
                "start_date": {
                    "type": "string",
                    "description": "Only messages from this ISO 8601 date or time on, e.g. '2024-05-01'.",
                },
                "end_date": {
                    "type": "string",
                    "description": "Only messages before this ISO 8601 date or time.",
                },
                "top_k": {"type": "integer", "description": "How many results to return (1-50, default 5)."},
            },
            ["query"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="send_message_to_agent_and_wait_for_reply",
        description=(
            "Send a message to another agent of your organization and wait for its reply, which is the "
            "result of this call. Use it to ask an agent that knows something you do not."
        ),
        parameters=_object(
            {
                "agent_id": {"type": "string", "description": "Id of the agent, e.g. 'agent-...'."},
                "message": {"type": "string", "description": "What to tell or ask it."},
            },
            ["agent_id", "message"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_CONTROL,
    ),
    BuiltinTool(
        name="send_message_to_agent_async",
        description=(
            "Send a message to another agent of your organization without waiting: it reads the message in "
            "a turn of its own, later. Its reply does not come back to this call."
        ),
        parameters=_object(
            {
                "agent_id": {"type": "string", "description": "Id of the agent, e.g. 'agent-...'."},
                "message": {"type": "string", "description": "What to tell it."},
            },
            ["agent_id", "message"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_CONTROL,
    ),
    BuiltinTool(
        name="send_message_to_agents_matching_tags",
        description=(
            "Send a message to every other agent of your organization that has all of the given tags, and "
            "wait for their replies, which are the result of this call."
        ),
        parameters=_object(
            {
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Tags an agent must all have, e.g. ['research'].",
                },
                "message": {"type": "string", "description": "What to tell or ask them."},
            },
            ["tags", "message"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_CONTROL,
    ),
)
