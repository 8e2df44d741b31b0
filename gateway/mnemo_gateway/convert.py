"""Proto <-> REST shapes."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from mnemo.agent.v1 import agent_pb2
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import block_pb2
from mnemo_core.wire import from_struct, to_struct
from mnemo_gateway import schemas

STOP_REASONS = {
    turn_pb2.STOP_REASON_END_TURN: "end_turn",
    turn_pb2.STOP_REASON_MAX_STEPS: "max_steps",
    turn_pb2.STOP_REASON_ERROR: "error",
    turn_pb2.STOP_REASON_CANCELLED: "cancelled",
    turn_pb2.STOP_REASON_REQUIRES_APPROVAL: "requires_approval",
    turn_pb2.STOP_REASON_CONTEXT_OVERFLOW: "context_overflow",
    turn_pb2.STOP_REASON_TOOL_RULE: "tool_rule",
}
AGENT_TYPES = {
    "standard": agent_pb2.AGENT_TYPE_STANDARD,
    "voice": agent_pb2.AGENT_TYPE_VOICE,
    "sleeptime": agent_pb2.AGENT_TYPE_SLEEPTIME,
}
AGENT_TYPE_NAMES = {value: name for name, value in AGENT_TYPES.items()}
EVENT_TYPES = {
    message_pb2.EVENT_TYPE_SUMMARY: "summary",
    message_pb2.EVENT_TYPE_TRUNCATION: "truncation",
    message_pb2.EVENT_TYPE_MEMORY_PRESSURE: "memory_pressure",
}


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def block_out(block: block_pb2.Block) -> schemas.Block:
    """The REST form of a block."""
    return schemas.Block(
        id=block.id,
        label=block.label,
        value=block.value,
        limit=block.limit,
        description=block.description,
        read_only=block.read_only,
        agent_ids=list(block.agent_ids),
        metadata=from_struct(block.metadata),
        created_at=_time(block.create_time, block.HasField("create_time")),
        updated_at=_time(block.update_time, block.HasField("update_time")),
    )


def block_in(block: schemas.BlockCreate) -> block_pb2.Block:
    """The proto form of a block to create."""
    return block_pb2.Block(
        label=block.label,
        value=block.value,
        limit=block.limit or 0,
        description=block.description,
        read_only=block.read_only,
        metadata=to_struct(block.metadata),
    )


def agent_out(agent: agent_pb2.Agent) -> schemas.Agent:
    """The REST form of an agent."""
    options = agent.llm_options
    return schemas.Agent(
        id=agent.id,
        name=agent.name,
        description=agent.description,
        system=agent.system,
        model=agent.model,
        embedding_model=agent.embedding_model,
        context_window=agent.context_window,
        max_steps=agent.max_steps,
        agent_type=AGENT_TYPE_NAMES.get(agent.agent_type, "standard"),
        tool_ids=list(agent.tool_ids),
        tags=list(agent.tags),
        metadata=from_struct(agent.metadata),
        llm_options=schemas.LlmOptions(
            temperature=options.temperature if options.HasField("temperature") else None,
            max_tokens=options.max_tokens,
            parallel_tool_calls=options.parallel_tool_calls,
        ),
        blocks=[block_out(b) for b in agent.blocks],
        created_at=_time(agent.create_time, agent.HasField("create_time")),
        updated_at=_time(agent.update_time, agent.HasField("update_time")),
    )


def agent_in(body: schemas.AgentCreate) -> agent_pb2.CreateAgentRequest:
    """The CreateAgent request for a REST body."""
    options = agent_pb2.LlmOptions(
        max_tokens=body.llm_options.max_tokens, parallel_tool_calls=body.llm_options.parallel_tool_calls
    )
    if body.llm_options.temperature is not None:
        options.temperature = body.llm_options.temperature
    return agent_pb2.CreateAgentRequest(
        agent=agent_pb2.Agent(
            name=body.name,
            model=body.model,
            system=body.system,
            description=body.description,
            tool_ids=body.tool_ids,
            tags=body.tags,
            metadata=to_struct(body.metadata),
            embedding_model=body.embedding_model,
            context_window=body.context_window,
            max_steps=body.max_steps,
            agent_type=AGENT_TYPES[body.agent_type],
            llm_options=options,
        ),
        memory_blocks=[block_in(b) for b in body.memory_blocks],
        include_base_tools=body.include_base_tools,
        block_ids=body.block_ids,
    )


def message_in(message: schemas.MessageCreate) -> message_pb2.Message:
    """The proto form of an input message."""
    if message.role == "system":
        return message_pb2.Message(system=message_pb2.SystemContent(text=message.text()))
    return message_pb2.Message(user=message_pb2.UserContent(text=message.text(), name=message.name or ""))


def message_out(message: message_pb2.Message) -> schemas.Message | None:
    """The REST form of a stored message (None for content this API version does not know)."""
    base = {
        "id": message.id,
        "date": _time(message.create_time, message.HasField("create_time")),
        "run_id": message.run_id,
        "step": message.step,
    }
    kind = message.WhichOneof("content")
    if kind == "user":
        return schemas.UserMessage(**base, content=message.user.text, name=message.user.name or None)
    if kind == "system":
        return schemas.SystemMessage(**base, content=message.system.text)
    if kind == "assistant":
        return schemas.AssistantMessage(**base, content=message.assistant.text)
    if kind == "reasoning":
        return schemas.ReasoningMessage(**base, reasoning=message.reasoning.text)
    if kind == "tool_call":
        call = message.tool_call.tool_call
        return schemas.ToolCallMessage(
            **base, tool_call=schemas.ToolCall(name=call.name, arguments=call.arguments, tool_call_id=call.id)
        )
    if kind == "tool_return":
        ret = message.tool_return
        return schemas.ToolReturnMessage(
            **base,
            tool_return=ret.content,
            status="error" if ret.status == message_pb2.TOOL_RETURN_STATUS_ERROR else "success",
            tool_call_id=ret.tool_call_id,
            name=ret.name,
            stdout=ret.stdout or None,
            stderr=ret.stderr or None,
        )
    if kind == "event":
        return schemas.EventMessage(
            **base, event_type=EVENT_TYPES.get(message.event.type, "unknown"), content=message.event.text
        )
    return None


def messages_out(messages: list[message_pb2.Message]) -> list[schemas.Message]:
    """The REST form of several messages."""
    return [out for out in map(message_out, messages) if out is not None]


def usage_out(usage: turn_pb2.Usage) -> schemas.Usage:
    """The REST form of usage."""
    return schemas.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        step_count=usage.step_count,
    )
