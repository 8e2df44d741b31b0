"""The step loop: one turn of an agent.

Each step compiles the system prompt from core memory, calls the model with the agent's tools,
runs the tools it asked for, and stores the step's messages in one atomic batch (a tool call
together with its return). The turn ends when the model answers without a tool call, or at
max_steps. A turn retried with the same idempotency key returns the first result, or resumes an
interrupted run from its last stored step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.agents import Agents
from mnemo_agent.conversation import from_reply, to_chat_messages
from mnemo_agent.memory_tools import MemoryTools, ToolError
from mnemo_agent.mesh import Mesh
from mnemo_agent.models import AgentRow, RunRow
from mnemo_agent.prompt import compile_system_prompt
from mnemo_agent.runs import COMPLETED, STOP_REASONS, Runs
from mnemo_core.actor import Actor
from mnemo_core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MnemoError,
    NotFound,
    PermissionDenied,
    Unimplemented,
)
from mnemo_core.telemetry import tracer
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

MAX_INPUT_MESSAGES = 100
MAX_INPUT_CHARS = 1_000_000
TRUNCATION_MARKER = "\n[... truncated: the tool returned {total} characters; {shown} are shown]"
# Errors of a memory tool that the model caused and can fix; anything else fails the turn.
_MODEL_FIXABLE = (InvalidArgument, NotFound, PermissionDenied, FailedPrecondition, AlreadyExists)


@dataclass
class TurnResult:
    """What a turn produced."""

    run_id: str
    messages: list[message_pb2.Message]
    usage: turn_pb2.Usage
    stop_reason: turn_pb2.StopReason.ValueType


@dataclass
class _Progress:
    """A turn's state as it advances; kept so that a failure can still record usage."""

    usage: turn_pb2.Usage = field(default_factory=turn_pb2.Usage)
    produced: list[message_pb2.Message] = field(default_factory=list)


def check_inputs(messages: Sequence[message_pb2.Message]) -> list[message_pb2.Message]:
    """The input messages of a turn: 1-100 user or system messages of storable text."""
    if not messages:
        raise invalid("messages", "send at least one message")
    if len(messages) > MAX_INPUT_MESSAGES:
        raise invalid("messages", f"at most {MAX_INPUT_MESSAGES} messages per turn")
    inputs = []
    for i, message in enumerate(messages):
        kind = message.WhichOneof("content")
        if kind not in ("user", "system"):
            raise invalid(f"messages[{i}]", "input messages must have user or system content")
        text = message.user.text if kind == "user" else message.system.text
        check_text(text, f"messages[{i}].{kind}.text", max_chars=MAX_INPUT_CHARS, allow_empty=False)
        clean = message_pb2.Message()
        getattr(clean, kind).CopyFrom(getattr(message, kind))
        inputs.append(clean)
    return inputs


class AgentLocks:
    """One lock per agent, so two turns of one agent never interleave their histories."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, agent_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(agent_id, (asyncio.Lock(), 0))
        self._locks[agent_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[agent_id]
            if users == 1:
                del self._locks[agent_id]
            else:
                self._locks[agent_id] = (lock, users - 1)


def _add_usage(total: turn_pb2.Usage, step: turn_pb2.Usage) -> None:
    total.prompt_tokens += step.prompt_tokens
    total.completion_tokens += step.completion_tokens
    total.total_tokens += step.total_tokens or (step.prompt_tokens + step.completion_tokens)
    total.step_count += 1


def _truncated(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER.format(total=len(text), shown=limit)


class Turns:
    """Runs agent turns against the mesh."""

    def __init__(
        self,
        agents: Agents,
        runs: Runs,
        mesh: Mesh,
        *,
        default_max_steps: int,
        max_steps_limit: int,
        llm_timeout: float,
    ) -> None:
        self._agents = agents
        self._runs = runs
        self._mesh = mesh
        self._memory_tools = MemoryTools(mesh)
        self._locks = AgentLocks()
        self._active: set[str] = set()
        self._default_max_steps = default_max_steps
        self._max_steps_limit = max_steps_limit
        self._llm_timeout = llm_timeout

    async def send(
        self,
        actor: Actor,
        agent_id: str,
        messages: Sequence[message_pb2.Message],
        *,
        max_steps: int = 0,
        idempotency_key: str = "",
    ) -> TurnResult:
        """Runs one turn (or returns/resumes the run recorded under `idempotency_key`)."""
        inputs = check_inputs(messages)
        if not 0 <= max_steps <= self._max_steps_limit:
            raise invalid("max_steps", f"must be between 0 and {self._max_steps_limit}")
        check_text(idempotency_key, "idempotency_key", max_chars=256)
        agent = await self._agents.row(actor.org_id, agent_id)
        steps = min(max_steps or agent.max_steps or self._default_max_steps, self._max_steps_limit)
        async with self._locks.hold(agent.id):
            start = await self._runs.start(actor.org_id, agent.id, idempotency_key)
            run = start.run
            if start.existing:
                if run.status == COMPLETED:
                    return await self._replay(run)
                if run.id in self._active:
                    raise Aborted(
                        "a turn with this idempotency key is still running", reason="RUN_IN_PROGRESS"
                    )
            return await self._execute(agent, run, inputs, steps, resume=start.existing)

    async def _execute(
        self, agent: AgentRow, run: RunRow, inputs: list[message_pb2.Message], max_steps: int, *, resume: bool
    ) -> TurnResult:
        progress = _Progress()
        self._active.add(run.id)
        try:
            stop = await self._loop(agent, run, inputs, max_steps, progress, resume=resume)
        except BaseException as exc:
            error = exc.message if isinstance(exc, MnemoError) else f"{type(exc).__name__}: {exc}"
            await asyncio.shield(
                self._runs.finish(
                    run.id,
                    stop_reason=turn_pb2.STOP_REASON_ERROR,
                    usage=progress.usage,
                    message_ids=[m.id for m in progress.produced],
                    error=error or type(exc).__name__,
                )
            )
            raise
        finally:
            self._active.discard(run.id)
        await self._runs.finish(
            run.id, stop_reason=stop, usage=progress.usage, message_ids=[m.id for m in progress.produced]
        )
        return TurnResult(run.id, progress.produced, progress.usage, stop)

    async def _replay(self, run: RunRow) -> TurnResult:
        stored = await self._run_messages(run)
        wanted = set(run.message_ids)
        usage = turn_pb2.Usage(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            total_tokens=run.total_tokens,
            step_count=run.step_count,
        )
        return TurnResult(
            run.id,
            [m for m in stored if m.id in wanted],
            usage,
            STOP_REASONS.get(run.stop_reason, turn_pb2.STOP_REASON_UNSPECIFIED),
        )

    async def _run_messages(self, run: RunRow) -> list[message_pb2.Message]:
        messages: list[message_pb2.Message] = []
        token = ""
        while True:
            page = await self._mesh.messages.ListMessages(
                history_pb2.ListMessagesRequest(
                    agent_id=run.agent_id, run_id=run.id, page_size=1000, page_token=token
                )
            )
            messages.extend(page.messages)
            token = page.next_page_token
            if not token:
                return messages

    async def _loop(
        self,
        agent: AgentRow,
        run: RunRow,
        inputs: list[message_pb2.Message],
        max_steps: int,
        progress: _Progress,
        *,
        resume: bool,
    ) -> turn_pb2.StopReason.ValueType:
        first_step = 0
        pending = inputs
        if resume:
            stored = await self._run_messages(run)
            if stored:
                last = max(m.step for m in stored)
                progress.produced = [m for m in stored if m.WhichOneof("content") not in ("user", "system")]
                if not any(m.HasField("tool_call") for m in stored if m.step == last):
                    return turn_pb2.STOP_REASON_END_TURN
                first_step, pending = last + 1, []
        window, blocks_response, tools = await asyncio.gather(
            self._mesh.messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent.id)),
            self._mesh.blocks.ListBlocks(block_pb2.ListBlocksRequest(agent_id=agent.id, page_size=1000)),
            self._tools(agent),
        )
        history = list(window.messages)
        history_count = window.history_count
        blocks = list(blocks_response.blocks)
        by_name = {tool.name: tool for tool in tools}
        schemas = [
            llm_pb2.ToolSchema(name=t.name, description=t.description, parameters_json=t.json_schema)
            for t in tools
        ]
        options = agent.llm_options or {}
        for step in range(first_step, max_steps):
            with _tracer.start_as_current_span("agent.step", attributes={"agent.id": agent.id, "step": step}):
                system = compile_system_prompt(
                    agent.system,
                    blocks,
                    history_count=history_count + len(pending),
                    in_context_count=len(history) + len(pending),
                    now=utcnow(),
                )
                request = llm_pb2.ChatRequest(
                    model=agent.model,
                    messages=[
                        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content=system),
                        *to_chat_messages([*history, *pending]),
                    ],
                    tools=schemas,
                    max_tokens=int(options.get("max_tokens", 0)),
                    parallel_tool_calls=bool(options.get("parallel_tool_calls", False)),
                    agent_id=agent.id,
                )
                if options.get("temperature") is not None:
                    request.temperature = float(options["temperature"])
                reply = await self._mesh.llm.Chat(request, timeout=self._llm_timeout)
                _add_usage(progress.usage, reply.usage)
                step_messages = from_reply(reply.message)
                calls = [m.tool_call.tool_call for m in step_messages if m.HasField("tool_call")]
                returns = [await self._run_tool(agent, call, by_name, blocks) for call in calls]
                appended = await self._mesh.messages.AppendMessages(
                    history_pb2.AppendMessagesRequest(
                        agent_id=agent.id,
                        run_id=run.id,
                        step=step,
                        messages=[*pending, *step_messages, *returns],
                    )
                )
                history.extend(appended.messages)
                history_count += len(appended.messages)
                progress.produced.extend(appended.messages[len(pending) :])
                pending = []
                if not calls:
                    return turn_pb2.STOP_REASON_END_TURN
        return turn_pb2.STOP_REASON_MAX_STEPS

    async def _tools(self, agent: AgentRow) -> list[tool_pb2.Tool]:
        if not agent.tool_ids:
            return []
        try:
            response = await self._mesh.tools.BatchGetTools(
                tool_pb2.BatchGetToolsRequest(tool_ids=agent.tool_ids)
            )
        except NotFound as exc:
            raise FailedPrecondition(
                f"the agent refers to tools that no longer exist ({exc.message}); update its tool_ids",
                reason="AGENT_TOOLS_MISSING",
            ) from None
        return list(response.tools)

    async def _run_tool(
        self,
        agent: AgentRow,
        call: message_pb2.ToolCall,
        tools: dict[str, tool_pb2.Tool],
        blocks: list[block_pb2.Block],
    ) -> message_pb2.Message:
        tool = tools.get(call.name)
        with _tracer.start_as_current_span("agent.tool", attributes={"tool.name": call.name}):
            try:
                if tool is None:
                    raise ToolError(
                        f"there is no tool named '{call.name}'; available: {', '.join(sorted(tools))}"
                    )
                outcome = await self._invoke(agent, tool, call, blocks)
            except ToolError as exc:
                outcome = _error_return(str(exc))
            except _MODEL_FIXABLE as exc:
                outcome = _error_return(exc.message)
            except Unimplemented as exc:
                outcome = _error_return(exc.message)
        outcome.tool_call_id = call.id
        outcome.name = call.name
        limit = tool.return_char_limit if tool is not None else 0
        outcome.content = _truncated(outcome.content, limit)
        return message_pb2.Message(tool_return=outcome)

    async def _invoke(
        self, agent: AgentRow, tool: tool_pb2.Tool, call: message_pb2.ToolCall, blocks: list[block_pb2.Block]
    ) -> message_pb2.ToolReturnContent:
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ToolError(f"the arguments are not valid JSON ({exc.msg}); send a JSON object") from None
        if not isinstance(args, dict):
            raise ToolError("the arguments must be a JSON object")
        if tool.tool_type == tool_pb2.TOOL_TYPE_MEMORY:
            text, changed = await self._memory_tools.run(agent, tool.name, args)
            for i, block in enumerate(blocks):
                if changed is not None and block.id == changed.id:
                    blocks[i] = changed
            return message_pb2.ToolReturnContent(content=text, status=message_pb2.TOOL_RETURN_STATUS_SUCCESS)
        if tool.tool_type in (tool_pb2.TOOL_TYPE_CUSTOM, tool_pb2.TOOL_TYPE_MCP):
            result = await self._mesh.tools.RunTool(
                tool_pb2.RunToolRequest(
                    tool_id=tool.id, arguments_json=call.arguments or "{}", agent_id=agent.id
                )
            )
            return message_pb2.ToolReturnContent(
                content=result.content, status=result.status, stdout=result.stdout, stderr=result.stderr
            )
        raise ToolError(
            f"tool '{tool.name}' is of type {tool_pb2.ToolType.Name(tool.tool_type)}, which this server cannot run"
        )


def _error_return(text: str) -> message_pb2.ToolReturnContent:
    return message_pb2.ToolReturnContent(
        content=f"Error: {text}", status=message_pb2.TOOL_RETURN_STATUS_ERROR
    )
