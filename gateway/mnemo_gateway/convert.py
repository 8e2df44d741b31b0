"""Proto <-> REST shapes."""

from __future__ import annotations

from mnemo.agent.v1 import agent_pb2, batch_pb2, group_pb2, run_pb2
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.rest.agents import (
    Agent,
    AgentCreate,
    AgentUpdate,
    LlmOptions,
    SleeptimeConfig,
    ToolOutputBranch,
    ToolRule,
)
from mnemo.rest.batches import Batch
from mnemo.rest.blocks import Block, BlockCreate
from mnemo.rest.groups import Group, GroupCreate, GroupManager, GroupRun
from mnemo.rest.messages import (
    AssistantMessage,
    ContextMessage,
    EventMessage,
    Message,
    MessageCreate,
    ReasoningMessage,
    SystemMessage,
    ToolCall,
    ToolCallMessage,
    ToolReturnMessage,
    Usage,
    UserMessage,
)
from mnemo.rest.runs import Run
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import field_time, from_struct, to_struct

STOP_REASONS = EnumNames(turn_pb2.StopReason)
AGENT_TYPES = EnumNames(agent_pb2.AgentType)
TOOL_RULE_TYPES = EnumNames(agent_pb2.ToolRuleType)
RUN_STATUSES = EnumNames(run_pb2.RunStatus)
EVENT_TYPES = EnumNames(message_pb2.EventType)
BATCH_MODES = EnumNames(batch_pb2.BatchMode)
MANAGER_TYPES = EnumNames(group_pb2.ManagerType)
MEMORY_TOOL_SETS = EnumNames(agent_pb2.MemoryToolSet)


def block_out(block: block_pb2.Block) -> Block:
    """The REST form of a block."""
    return Block(
        id=block.id,
        label=block.label,
        value=block.value,
        limit=block.limit,
        description=block.description,
        read_only=block.read_only,
        agent_ids=list(block.agent_ids),
        metadata=from_struct(block.metadata),
        created_at=field_time(block, "create_time"),
        updated_at=field_time(block, "update_time"),
        version=block.version,
    )


def block_in(block: BlockCreate) -> block_pb2.Block:
    """The proto form of a block to create."""
    return block_pb2.Block(
        label=block.label,
        value=block.value,
        limit=block.limit or 0,
        description=block.description,
        read_only=block.read_only,
        metadata=to_struct(block.metadata),
    )


def agent_out(agent: agent_pb2.Agent) -> Agent:
    """The REST form of an agent."""
    options = agent.llm_options
    return Agent(
        id=agent.id,
        name=agent.name,
        description=agent.description,
        system=agent.system,
        model=agent.model,
        embedding_model=agent.embedding_model,
        context_window=agent.context_window,
        max_steps=agent.max_steps,
        agent_type=AGENT_TYPES.name(agent.agent_type) or "standard",
        tool_ids=list(agent.tool_ids),
        tags=list(agent.tags),
        metadata=from_struct(agent.metadata),
        llm_options=LlmOptions(
            temperature=options.temperature if options.HasField("temperature") else None,
            max_tokens=options.max_tokens,
            parallel_tool_calls=options.parallel_tool_calls,
        ),
        blocks=[block_out(b) for b in agent.blocks],
        created_at=field_time(agent, "create_time"),
        updated_at=field_time(agent, "update_time"),
        tool_rules=[tool_rule_out(r) for r in agent.tool_rules],
        summarizer_model=agent.summarizer_model,
        sleeptime=SleeptimeConfig(
            enabled=agent.sleeptime.enabled, frequency=agent.sleeptime.frequency, model=agent.sleeptime.model
        ),
        sleeptime_agent_id=agent.sleeptime_agent_id or None,
        primary_agent_id=agent.primary_agent_id or None,
        memory_tool_set=MEMORY_TOOL_SETS.name(agent.memory_tool_set) or "classic",
    )


def tool_rule_out(rule: agent_pb2.ToolRule) -> ToolRule:
    """The REST form of a tool rule."""
    return ToolRule.model_validate(
        {
            "tool_name": rule.tool_name,
            "type": TOOL_RULE_TYPES.name(rule.type) or "terminal",
            "max_calls": rule.max_calls,
            "children": list(rule.children),
            "branches": [
                ToolOutputBranch(
                    equals=b.equals if b.HasField("equals") else None,
                    pattern=b.pattern if b.HasField("pattern") else None,
                    next_tool=b.next_tool,
                )
                for b in rule.branches
            ],
            "default_next_tool": rule.default_next_tool,
        }
    )


def _branch_in(branch: ToolOutputBranch) -> agent_pb2.ToolOutputBranch:
    result = agent_pb2.ToolOutputBranch(next_tool=branch.next_tool)
    if branch.equals is not None:
        result.equals = branch.equals
    if branch.pattern is not None:
        result.pattern = branch.pattern
    return result


def tool_rules_in(rules: list[ToolRule]) -> list[agent_pb2.ToolRule]:
    """The proto form of tool rules."""
    return [
        agent_pb2.ToolRule(
            tool_name=r.tool_name,
            type=TOOL_RULE_TYPES.value(r.type),
            max_calls=r.max_calls,
            children=r.children,
            branches=[_branch_in(b) for b in r.branches],
            default_next_tool=r.default_next_tool,
        )
        for r in rules
    ]


def llm_options_in(options: LlmOptions) -> agent_pb2.LlmOptions:
    """The proto form of sampling options."""
    result = agent_pb2.LlmOptions(
        max_tokens=options.max_tokens, parallel_tool_calls=options.parallel_tool_calls
    )
    if options.temperature is not None:
        result.temperature = options.temperature
    return result


def agent_in(body: AgentCreate) -> agent_pb2.CreateAgentRequest:
    """The CreateAgent request for a REST body."""
    options = llm_options_in(body.llm_options)
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
            agent_type=AGENT_TYPES.value(body.agent_type),
            llm_options=options,
            tool_rules=tool_rules_in(body.tool_rules),
            summarizer_model=body.summarizer_model,
            sleeptime=agent_pb2.SleeptimeConfig(
                enabled=body.sleeptime.enabled, frequency=body.sleeptime.frequency, model=body.sleeptime.model
            ),
            memory_tool_set=MEMORY_TOOL_SETS.value(body.memory_tool_set),
        ),
        memory_blocks=[block_in(b) for b in body.memory_blocks],
        include_base_tools=body.include_base_tools,
        block_ids=body.block_ids,
    )


def agent_update_in(agent_id: str, body: AgentUpdate) -> agent_pb2.UpdateAgentRequest:
    """The UpdateAgent request for a REST body: the fields it sets, and a mask naming them."""
    changed = {name for name in body.model_fields_set if getattr(body, name) is not None}
    agent = agent_pb2.Agent(id=agent_id)
    for name in changed:
        value = getattr(body, name)
        if name == "metadata":
            struct = to_struct(value)
            if struct is not None:  # empty: the masked field stays empty, which clears it
                agent.metadata.CopyFrom(struct)
        elif name == "llm_options":
            agent.llm_options.CopyFrom(llm_options_in(value))
        elif name == "tool_rules":
            agent.tool_rules.extend(tool_rules_in(value))
        elif name == "memory_tool_set":
            agent.memory_tool_set = MEMORY_TOOL_SETS.value(value)
        elif name in ("tool_ids", "tags"):
            getattr(agent, name).extend(value)
        else:
            setattr(agent, name, value)
    request = agent_pb2.UpdateAgentRequest(agent=agent)
    request.update_mask.paths.extend(sorted(changed))
    return request


def message_in(message: MessageCreate) -> message_pb2.Message:
    """The proto form of an input message."""
    if message.role == "system":
        return message_pb2.Message(system=message_pb2.SystemContent(text=message.text()))
    return message_pb2.Message(user=message_pb2.UserContent(text=message.text(), name=message.name or ""))


def message_out(message: message_pb2.Message) -> Message | None:
    """The REST form of a stored message (None for content this API version does not know)."""
    base = {
        "id": message.id,
        "date": field_time(message, "create_time"),
        "run_id": message.run_id,
        "step": message.step,
        "agent_id": message.agent_id or None,
    }
    kind = message.WhichOneof("content")
    if kind == "user":
        return UserMessage(**base, content=message.user.text, name=message.user.name or None)
    if kind == "system":
        return SystemMessage(**base, content=message.system.text)
    if kind == "assistant":
        return AssistantMessage(**base, content=message.assistant.text)
    if kind == "reasoning":
        return ReasoningMessage(**base, reasoning=message.reasoning.text)
    if kind == "tool_call":
        call = message.tool_call.tool_call
        return ToolCallMessage(
            **base, tool_call=ToolCall(name=call.name, arguments=call.arguments, tool_call_id=call.id)
        )
    if kind == "tool_return":
        ret = message.tool_return
        return ToolReturnMessage(
            **base,
            tool_return=ret.content,
            status="error" if ret.status == message_pb2.TOOL_RETURN_STATUS_ERROR else "success",
            tool_call_id=ret.tool_call_id,
            name=ret.name,
            stdout=ret.stdout or None,
            stderr=ret.stderr or None,
        )
    if kind == "event":
        return EventMessage(
            **base, event_type=EVENT_TYPES.name(message.event.type) or "unknown", content=message.event.text
        )
    return None


def messages_out(messages: list[message_pb2.Message]) -> list[Message]:
    """The REST form of several messages."""
    return [out for out in map(message_out, messages) if out is not None]


def usage_out(usage: turn_pb2.Usage) -> Usage:
    """The REST form of usage."""
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        step_count=usage.step_count,
    )


def run_out(run: run_pb2.Run) -> Run:
    """The REST form of a run."""
    return Run(
        id=run.id,
        agent_id=run.agent_id,
        status=RUN_STATUSES.name(run.status) or "created",
        stop_reason=STOP_REASONS.name(run.stop_reason) or None,
        usage=usage_out(run.usage),
        idempotency_key=run.idempotency_key or None,
        message_ids=list(run.message_ids),
        error=run.error or None,
        pending_approvals=[
            ToolCall(name=c.name, arguments=c.arguments, tool_call_id=c.id) for c in run.pending_approvals
        ],
        batch_id=run.batch_id or None,
        created_at=field_time(run, "create_time"),
        completed_at=field_time(run, "complete_time"),
        parent_run_id=run.parent_run_id or None,
        group_run_id=run.group_run_id or None,
    )


def batch_out(batch: batch_pb2.Batch) -> Batch:
    """The REST form of a batch."""
    return Batch(
        id=batch.id,
        status="completed" if batch.status == batch_pb2.BATCH_STATUS_COMPLETED else "running",
        mode="provider" if batch.mode == batch_pb2.BATCH_MODE_PROVIDER else "concurrent",
        runs=[run_out(run) for run in batch.runs],
        created_at=field_time(batch, "create_time"),
        chat_batch_ids=list(batch.chat_batch_ids),
        provider_round_count=batch.provider_round_count,
    )


def _context_item(message: ContextMessage) -> list[message_pb2.Message]:
    if message.role == "user":
        return [
            message_pb2.Message(user=message_pb2.UserContent(text=message.content, name=message.name or ""))
        ]
    if message.role == "system":
        return [message_pb2.Message(system=message_pb2.SystemContent(text=message.content))]
    if message.role == "tool":
        return [
            message_pb2.Message(
                tool_return=message_pb2.ToolReturnContent(
                    tool_call_id=message.tool_call_id,
                    name=message.name or "",
                    content=message.content,
                    status=message_pb2.TOOL_RETURN_STATUS_SUCCESS,
                )
            )
        ]
    items = []
    if message.content or not message.tool_calls:
        items.append(message_pb2.Message(assistant=message_pb2.AssistantContent(text=message.content)))
    for call in message.tool_calls:
        items.append(
            message_pb2.Message(
                tool_call=message_pb2.ToolCallContent(
                    tool_call=message_pb2.ToolCall(
                        id=call.tool_call_id, name=call.name, arguments=call.arguments
                    )
                )
            )
        )
    return items


def context_in(messages: list[ContextMessage]) -> list[message_pb2.Message]:
    """Stored-message form of an ephemeral turn's earlier conversation (one item per message kind)."""
    result: list[message_pb2.Message] = []
    for i, message in enumerate(messages):
        for item in _context_item(message):
            # Each chat message is its own group, as one stored step would be.
            item.run_id, item.step = "context", i
            result.append(item)
    return result


def group_in(body: GroupCreate) -> group_pb2.CreateGroupRequest:
    """The CreateGroup request for a REST body."""
    manager = body.manager
    return group_pb2.CreateGroupRequest(
        group=group_pb2.Group(
            name=body.name,
            description=body.description,
            agent_ids=body.agent_ids,
            manager=group_pb2.GroupManager(
                type=MANAGER_TYPES.value(manager.type),
                manager_agent_id=manager.manager_agent_id,
                max_turns=manager.max_turns,
                termination_token=manager.termination_token,
                sleeptime_frequency=manager.sleeptime_frequency,
            ),
            shared_block_ids=body.shared_block_ids,
            metadata=to_struct(body.metadata),
        ),
        shared_blocks=[block_in(b) for b in body.shared_blocks],
    )


def group_out(group: group_pb2.Group) -> Group:
    """The REST form of a group."""
    manager = group.manager
    return Group(
        id=group.id,
        name=group.name,
        description=group.description,
        agent_ids=list(group.agent_ids),
        manager=GroupManager(
            type=MANAGER_TYPES.name(manager.type) or "round_robin",
            manager_agent_id=manager.manager_agent_id,
            max_turns=manager.max_turns,
            termination_token=manager.termination_token,
            sleeptime_frequency=manager.sleeptime_frequency,
        ),
        shared_block_ids=list(group.shared_block_ids),
        metadata=from_struct(group.metadata),
        created_at=field_time(group, "create_time"),
    )


def group_run_out(run: group_pb2.GroupRun) -> GroupRun:
    """The REST form of a group run."""
    return GroupRun(
        id=run.id,
        group_id=run.group_id,
        status=RUN_STATUSES.name(run.status) or "running",
        stop_reason=STOP_REASONS.name(run.stop_reason) or None,
        usage=usage_out(run.usage),
        idempotency_key=run.idempotency_key or None,
        run_ids=list(run.run_ids),
        error=run.error or None,
        created_at=field_time(run, "create_time"),
        completed_at=field_time(run, "complete_time"),
    )
