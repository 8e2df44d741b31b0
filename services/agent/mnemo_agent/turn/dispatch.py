"""Running a step's tool calls: memory and agent-to-agent tools here, custom and MCP tools in the tools
service.

Calls run concurrently and their results keep the call order. Memory tools run one after another in
call order (they edit the same blocks). A call that breaks a tool rule, or that the user denied, gets
an error result without running; so does one the model can fix (unknown tool, bad arguments, a memory
edit the memory service refused, a memory edit the turn already made with the same arguments). Every
result is cut to its tool's return_char_limit.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.memory_tools import FINISH_EDITS, MemoryTools, ToolError
from mnemo_agent.turn.ports import Caller, MemoryToolRunner, Messenger, ToolSource
from mnemo_agent.turn.request import Decision
from mnemo_agent.turn.state import TurnState, edit_key
from mnemo_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unimplemented,
)
from mnemo_core.telemetry import tracer
from mnemo_core.tool_calls import ArgumentsInvalid, fit_result, parse_arguments

_tracer = tracer(__name__)

# What a model that repeats an edit is told. Small models loop on a call that worked (the same append
# again and again, until the step limit), and each repeat would store the same text once more.
REPEATED_EDIT = (
    "this exact edit was already made earlier in this turn and it succeeded, so it was not made again. "
    "Do not repeat it: answer the user now."
)

# Errors of a memory tool that the model caused and can fix (and Unimplemented: a tool this server cannot
# run); anything else fails the turn.
_MODEL_FIXABLE = (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    FailedPrecondition,
    AlreadyExists,
    Unimplemented,
)


class ToolDispatch:
    """Runs the tool calls of a turn's steps."""

    def __init__(self, tools: ToolSource, memory_tools: MemoryToolRunner, messenger: Messenger) -> None:
        self._tools = tools
        self._memory_tools = memory_tools
        self._messenger = messenger

    async def run(
        self,
        turn: TurnState,
        calls: Sequence[message_pb2.ToolCall],
        *,
        decision: Decision | None = None,
    ) -> list[message_pb2.Message]:
        """Runs a step's tool calls (checking them against the step's plan of the turn's rules, unless they
        were waiting for `decision`); returns their results in call order."""
        memory_lock = asyncio.Lock()
        jobs: list[asyncio.Task[message_pb2.Message] | message_pb2.Message] = []
        rules = turn.agent.rules
        step_calls: Counter[str] = Counter()
        step_edits: set[tuple[str, str]] = set()
        try:
            async with asyncio.TaskGroup() as group:
                for call in calls:
                    refused = None
                    if decision is not None and rules.needs_approval(call.name) and not decision.approve:
                        jobs.append(denied(call, decision.reason or "the user denied it"))
                        continue
                    if decision is None and turn.plan is not None:
                        refused = turn.plan.refusal(call.name, turn_calls=turn.calls, step_calls=step_calls)
                        turn.calls[call.name] += 1
                        step_calls[call.name] += 1
                    if refused is None and decision is None and self._is_edit(turn, call):
                        if edit_key(call) in turn.edits_made or edit_key(call) in step_edits:
                            turn.repeated_edit = True
                            refused = REPEATED_EDIT
                        step_edits.add(edit_key(call))
                    if refused is not None:
                        jobs.append(tool_message(call, error_return(refused)))
                        continue
                    jobs.append(group.create_task(self._run_one(turn, call, memory_lock)))
        except BaseExceptionGroup as failed:
            # The first failure as itself (a peer's UNAVAILABLE stays retryable), not wrapped in a group
            # that the error mapping would take for an internal error.
            raise failed.exceptions[0] from None
        returns = [job if isinstance(job, message_pb2.Message) else job.result() for job in jobs]
        for call, result in zip(calls, returns, strict=True):
            if result.tool_return.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS and self._is_edit(
                turn, call
            ):
                turn.edits_made.add(edit_key(call))
        return returns

    @staticmethod
    def _is_edit(turn: TurnState, call: message_pb2.ToolCall) -> bool:
        """Whether `call` is a call of a built-in memory tool that changes memory."""
        tool = turn.tools.get(call.name)
        return (
            tool is not None
            and tool.tool_type == tool_pb2.TOOL_TYPE_MEMORY
            and call.name in MemoryTools.writing
        )

    async def _run_one(
        self, turn: TurnState, call: message_pb2.ToolCall, memory_lock: asyncio.Lock
    ) -> message_pb2.Message:
        tool = turn.tools.get(call.name)
        with _tracer.start_as_current_span("agent.tool", attributes={"tool.name": call.name}):
            try:
                if tool is None:
                    raise ToolError(
                        f"there is no tool named '{call.name}'; available: {', '.join(sorted(turn.tools))}"
                    )
                if tool.tool_type == tool_pb2.TOOL_TYPE_MEMORY:
                    async with memory_lock:
                        outcome = await self._invoke(turn, tool, call, turn.blocks)
                else:
                    outcome = await self._invoke(turn, tool, call, turn.blocks)
            except ToolError as exc:
                outcome = error_return(str(exc))
            except _MODEL_FIXABLE as exc:
                outcome = error_return(exc.message)
        limit = tool.return_char_limit if tool is not None else 0
        outcome.content = fit_result(outcome.content, limit)
        return tool_message(call, outcome)

    async def _invoke(
        self, turn: TurnState, tool: tool_pb2.Tool, call: message_pb2.ToolCall, blocks: list[block_pb2.Block]
    ) -> message_pb2.ToolReturnContent:
        try:
            args = parse_arguments(call.arguments)
        except ArgumentsInvalid as exc:
            raise ToolError(str(exc)) from None
        agent = turn.agent
        if tool.tool_type == tool_pb2.TOOL_TYPE_MEMORY:
            if turn.ephemeral and tool.name in MemoryTools.writing:
                raise ToolError("memory is read-only in an ephemeral turn; nothing can be saved")
            text, changed = await self._memory_tools.run(agent, tool.name, args, run_id=turn.run_id)
            for i, block in enumerate(blocks):
                if changed is not None and block.id == changed.id:
                    blocks[i] = changed
            return message_pb2.ToolReturnContent(content=text, status=message_pb2.TOOL_RETURN_STATUS_SUCCESS)
        if tool.tool_type in (tool_pb2.TOOL_TYPE_CUSTOM, tool_pb2.TOOL_TYPE_MCP):
            if turn.ephemeral:
                return await self._tools.run(tool, call.arguments or "{}", "")
            return await self._tools.run(tool, call.arguments or "{}", agent.id, turn.run_id)
        if tool.tool_type == tool_pb2.TOOL_TYPE_CONTROL and tool.name in self._messenger.names:
            if turn.ephemeral:
                raise ToolError("an ephemeral turn cannot send messages to other agents")
            caller = Caller(agent.id, agent.org_id, agent.name, turn.run_id, call.id, turn.lineage)
            text = await self._messenger.run(caller, tool.name, args)
            return message_pb2.ToolReturnContent(content=text, status=message_pb2.TOOL_RETURN_STATUS_SUCCESS)
        raise ToolError(
            f"tool '{tool.name}' is of type {tool_pb2.ToolType.Name(tool.tool_type)}, which this server cannot run"
        )


def ending(
    turn: TurnState, calls: Sequence[message_pb2.ToolCall], returns: Sequence[message_pb2.Message]
) -> turn_pb2.StopReason.ValueType | None:
    """How a step's calls end the turn: a terminal tool succeeded (`tool_rule`), or memory_finish_edits
    did (`end_turn`); None when the turn goes on, as it always does after a continue_loop tool."""
    rules = turn.agent.rules
    if any(rules.continues(call.name) for call in calls):
        return None
    succeeded = [
        call.name
        for call, ret in zip(calls, returns, strict=True)
        if ret.tool_return.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS
    ]
    if any(rules.ends_turn(name) for name in succeeded):
        return turn_pb2.STOP_REASON_TOOL_RULE
    if (
        FINISH_EDITS in succeeded
        and turn.tools.get(FINISH_EDITS, tool_pb2.Tool()).tool_type == tool_pb2.TOOL_TYPE_MEMORY
    ):
        return turn_pb2.STOP_REASON_END_TURN
    return None


def tool_message(call: message_pb2.ToolCall, outcome: message_pb2.ToolReturnContent) -> message_pb2.Message:
    """The stored result of `call`."""
    outcome.tool_call_id = call.id
    outcome.name = call.name
    return message_pb2.Message(tool_return=outcome)


def error_return(text: str) -> message_pb2.ToolReturnContent:
    """A failed result, in words the model reads."""
    return message_pb2.ToolReturnContent(
        content=f"Error: {text}", status=message_pb2.TOOL_RETURN_STATUS_ERROR
    )


def denied(call: message_pb2.ToolCall, reason: str) -> message_pb2.Message:
    """The result of a call that was not run."""
    return tool_message(call, error_return(f"the call was not run: {reason}"))
