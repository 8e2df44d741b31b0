"""In-memory stand-ins for what a turn needs of the mesh: memory, tools, the model, the agents' rows.

Each keeps the behaviour of the real service that the step loop depends on (a retried step returns what
was stored, compaction refuses a window that changed, a block refuses text over its limit, the model
answers in the order it was scripted), so that every loop behaviour can be specified in milliseconds.
The runs table is the real one (mnemo_agent.runs on SQLite): leases, idempotency keys and the one
active run per agent are its rules, not the fakes'.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.memory_tools import AgentIdentity, ToolError
from mnemo_agent.runs import Runs
from mnemo_agent.store import Agent, AgentQueries
from mnemo_agent.turn import Turns, TurnSettings
from mnemo_agent.turn.ports import TokenCount, Window
from mnemo_core.db import Database
from mnemo_core.errors import Aborted, InvalidArgument, NotFound, Unimplemented
from mnemo_core.ids import new_id
from mnemo_core.wire import utcnow

AGENT_MODEL = "fake/agent"
SUMMARIZER_MODEL = "fake/summarizer"


def _copy(message: message_pb2.Message) -> message_pb2.Message:
    copy = message_pb2.Message()
    copy.CopyFrom(message)
    return copy


class MemoryFake:
    """Histories, context windows and blocks of agents, as the memory service keeps them."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.histories: dict[str, list[message_pb2.Message]] = defaultdict(list)
        self._start: dict[str, int] = defaultdict(int)
        self._summary: dict[str, str] = {}
        self.block_lists: dict[str, list[block_pb2.Block]] = defaultdict(list)
        self.window_reads = 0

    def add_block(self, agent_id: str, label: str, value: str = "", limit: int = 2000) -> None:
        self.block_lists[agent_id].append(
            block_pb2.Block(id=f"block-{next(self._ids)}", label=label, value=value, limit=limit)
        )

    def block(self, agent_id: str, label: str) -> block_pb2.Block:
        return next(b for b in self.block_lists[agent_id] if b.label == label)

    def seed(self, agent_id: str, messages: Sequence[message_pb2.Message]) -> None:
        """History stored before the test's turns (as earlier runs, one step each)."""
        for message in messages:
            stored = _copy(message)
            stored.id = f"message-{next(self._ids)}"
            stored.agent_id = agent_id
            stored.run_id = stored.run_id or f"run-seed-{next(self._ids)}"
            self.histories[agent_id].append(stored)

    def in_context(self, agent_id: str) -> list[message_pb2.Message]:
        history, summary = self.histories[agent_id], self._summary.get(agent_id)
        front = [m for m in history if m.id == summary]
        return front + [m for m in history[self._start[agent_id] :] if m.id != summary]

    async def window(self, agent_id: str) -> Window:
        self.window_reads += 1
        return Window([_copy(m) for m in self.in_context(agent_id)], len(self.histories[agent_id]))

    async def blocks(self, agent_id: str) -> list[block_pb2.Block]:
        return [_block_copy(b) for b in self.block_lists[agent_id]]

    async def run_page(
        self, agent_id: str, run_id: str, *, size: int, token: str
    ) -> tuple[list[message_pb2.Message], str]:
        mine = [m for m in self.histories[agent_id] if m.run_id == run_id]
        start, size = int(token or 0), size or 50
        end = start + size
        return [_copy(m) for m in mine[start:end]], str(end) if end < len(mine) else ""

    async def append(
        self, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        history = self.histories[agent_id]
        again = [m for m in history if m.run_id == run_id and m.step == step]
        if again:
            return [_copy(m) for m in again]
        stored = []
        for message in messages:
            copy = _copy(message)
            copy.id, copy.agent_id, copy.run_id, copy.step = (
                f"message-{next(self._ids)}",
                agent_id,
                run_id,
                step,
            )
            history.append(copy)
            stored.append(_copy(copy))
        return stored

    async def compact(
        self, agent_id: str, keep_from: str, summary: message_pb2.Message, expected_first: str
    ) -> tuple[message_pb2.Message | None, int]:
        history, start = self.histories[agent_id], self._start[agent_id]
        if expected_first and (history[start].id if start < len(history) else "") != expected_first:
            raise Aborted("the context window changed since it was read", reason="CONTEXT_WINDOW_CHANGED")
        keep = next((i for i, m in enumerate(history) if m.id == keep_from), None)
        if keep is None:
            raise NotFound(f"message {keep_from} not found", reason="MESSAGE_NOT_FOUND")
        if keep < start:
            raise InvalidArgument("keep_from_message_id is already outside the context window")
        stored = _copy(summary)
        stored.id, stored.agent_id, stored.run_id = (
            f"message-{next(self._ids)}",
            agent_id,
            new_id("compaction"),
        )
        history.append(stored)
        self._start[agent_id], self._summary[agent_id] = keep, stored.id
        return _copy(stored), keep - start


def _block_copy(block: block_pb2.Block) -> block_pb2.Block:
    copy = block_pb2.Block()
    copy.CopyFrom(block)
    return copy


class MemoryToolsFake:
    """core_memory_append, core_memory_replace and memory_finish_edits on the fake's blocks; counts how many
    ran at once, and keeps the run each ran for."""

    def __init__(self, memory: MemoryFake) -> None:
        self._memory = memory
        self._running = 0
        self.most_at_once = 0
        self.ran: list[tuple[str, dict[str, Any]]] = []
        self.runs: list[str] = []

    async def run(
        self, agent: AgentIdentity, name: str, args: dict[str, Any], *, run_id: str = ""
    ) -> tuple[str, block_pb2.Block | None]:
        self._running += 1
        self.most_at_once = max(self.most_at_once, self._running)
        try:
            await asyncio.sleep(0)  # where another call would slip in, were calls not in order
            self.ran.append((name, args))
            self.runs.append(run_id)
            if name == "memory_finish_edits":
                return "Memory edits finished.", None
            if name not in ("core_memory_append", "core_memory_replace"):
                raise ToolError(f"'{name}' is not a memory tool")
            block = self._memory.block(agent.id, str(args.get("label")))
            if name == "core_memory_append":
                value = f"{block.value}\n{args['content']}".strip("\n")
            else:
                value = block.value.replace(str(args["old_content"]), str(args["new_content"]))
            if len(value) > block.limit:
                raise InvalidArgument(
                    f"block '{block.label}' would hold {len(value)} characters; its limit is {block.limit}",
                    reason="BLOCK_LIMIT_EXCEEDED",
                )
            block.value = value
            return f"Updated block '{block.label}'.", _block_copy(block)
        finally:
            self._running -= 1


ToolFunction = Callable[[dict[str, Any]], Awaitable[str]]


class ToolFailed(Exception):
    """Raised by a fake tool function: the run is a failed result with this text."""


class ToolsFake:
    """A tool registry: custom tools are Python coroutines; memory tools are the built-in ids."""

    def __init__(self) -> None:
        self.tools: dict[str, tool_pb2.Tool] = {}
        self._functions: dict[str, ToolFunction] = {}
        self.runs: list[tuple[str, dict[str, Any], str]] = []
        self.gets = 0
        for name in ("core_memory_append", "core_memory_replace", "memory_finish_edits"):
            self.tools[f"tool-builtin-{name}"] = tool_pb2.Tool(
                id=f"tool-builtin-{name}",
                name=name,
                description=name,
                json_schema=json.dumps({"type": "object"}),
                tool_type=tool_pb2.TOOL_TYPE_MEMORY,
                return_char_limit=10_000,
            )

    def add(self, name: str, function: ToolFunction, *, return_char_limit: int = 10_000) -> str:
        tool_id = new_id("tool")
        self.tools[tool_id] = tool_pb2.Tool(
            id=tool_id,
            name=name,
            description=f"{name} for tests",
            json_schema=json.dumps({"type": "object", "properties": {"q": {"type": "string"}}}),
            tool_type=tool_pb2.TOOL_TYPE_CUSTOM,
            return_char_limit=return_char_limit,
        )
        self._functions[name] = function
        return tool_id

    async def get(self, tool_ids: Sequence[str]) -> list[tool_pb2.Tool]:
        self.gets += 1
        missing = [i for i in tool_ids if i not in self.tools]
        if missing:
            raise NotFound(f"tools {', '.join(missing)} not found", reason="TOOL_NOT_FOUND")
        return [self.tools[i] for i in tool_ids]

    async def run(
        self, tool: tool_pb2.Tool, arguments_json: str, agent_id: str, run_id: str = ""
    ) -> message_pb2.ToolReturnContent:
        arguments = json.loads(arguments_json)
        self.runs.append((tool.name, arguments, agent_id))
        try:
            text = await self._functions[tool.name](arguments)
        except ToolFailed as exc:
            return message_pb2.ToolReturnContent(
                content=str(exc), status=message_pb2.TOOL_RETURN_STATUS_ERROR
            )
        return message_pb2.ToolReturnContent(content=text, status=message_pb2.TOOL_RETURN_STATUS_SUCCESS)

    def ran(self, name: str) -> list[dict[str, Any]]:
        return [arguments for tool, arguments, _ in self.runs if tool == name]


@dataclass
class Hang:
    """A model call that never answers (until the turn is cancelled)."""

    forever: asyncio.Event = field(default_factory=asyncio.Event)


Scripted = llm_pb2.ChatResponse | Exception | Hang


def reply(
    text: str, *, reasoning: str = "", prompt_tokens: int = 10, completion_tokens: int = 5
) -> llm_pb2.ChatResponse:
    """A model reply with text only."""
    return llm_pb2.ChatResponse(
        message=llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_ASSISTANT, content=text, reasoning=reasoning),
        usage=turn_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
    )


def calls(*wanted: tuple[str, dict[str, Any] | str, str]) -> llm_pb2.ChatResponse:
    """A model reply that calls tools: (name, arguments (an object, or raw text), call id) each."""
    return llm_pb2.ChatResponse(
        message=llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            tool_calls=[
                message_pb2.ToolCall(
                    id=call_id,
                    name=name,
                    arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
                )
                for name, arguments, call_id in wanted
            ],
        ),
        usage=turn_pb2.Usage(prompt_tokens=10, completion_tokens=5),
    )


def overflow() -> InvalidArgument:
    """What the llm-gateway raises when the provider found the request longer than its window."""
    return InvalidArgument("the prompt is too long for the model", reason="CONTEXT_WINDOW_EXCEEDED")


class ModelFake:
    """Answers each model's calls in the order they were scripted; keeps every request.

    Streams split a reply's text into word deltas before the completed reply, unless `streams` is off
    (the llm-gateway then answers UNIMPLEMENTED, as one that cannot stream does).
    """

    def __init__(self) -> None:
        self._scripts: dict[str, list[Scripted]] = defaultdict(list)
        self.requests: list[llm_pb2.ChatRequest] = []
        self.streams = True
        self.streamed = 0
        self._arrived = asyncio.Condition()

    def script(self, *answers: Scripted, model: str = AGENT_MODEL) -> None:
        self._scripts[model].extend(answers)

    def of(self, model: str = AGENT_MODEL) -> list[llm_pb2.ChatRequest]:
        return [r for r in self.requests if r.model == model]

    async def wait_for_requests(self, count: int, model: str = AGENT_MODEL) -> None:
        async with asyncio.timeout(5), self._arrived:
            await self._arrived.wait_for(lambda: len(self.of(model)) >= count)

    async def chat(
        self, request: llm_pb2.ChatRequest, *, timeout: float | None = None
    ) -> llm_pb2.ChatResponse:
        return await self._answer(request)

    def stream(self, request: llm_pb2.ChatRequest) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        return self._stream(request)

    async def count_tokens(self, request: llm_pb2.ChatRequest) -> TokenCount:
        """A count like the llm-gateway's estimate: 4 characters a token, 3 per message and 3 to prime."""
        chars = sum(len(m.content) for m in request.messages)
        chars += sum(len(t.name) + len(t.description) + len(t.parameters_json) for t in request.tools)
        return TokenCount(3 + 3 * len(request.messages) + chars // 4, False, "estimate/fake", 8192)

    async def _stream(self, request: llm_pb2.ChatRequest) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        if not self.streams:
            raise Unimplemented("this llm-gateway cannot stream", reason="STREAMING_UNSUPPORTED")
        self.streamed += 1
        answer = await self._answer(request)
        if answer.message.reasoning:
            yield llm_pb2.StreamChatResponse(reasoning_delta=answer.message.reasoning)
        for word in answer.message.content.split():
            yield llm_pb2.StreamChatResponse(content_delta=word)
        yield llm_pb2.StreamChatResponse(completed=answer)

    async def _answer(self, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        copy = llm_pb2.ChatRequest()
        copy.CopyFrom(request)
        async with self._arrived:
            self.requests.append(copy)
            self._arrived.notify_all()
        script = self._scripts[request.model]
        if not script:
            raise AssertionError(
                f"no answer scripted for call {len(self.of(request.model))} to {request.model}"
            )
        answer = script.pop(0)
        if isinstance(answer, Hang):
            await answer.forever.wait()
            raise AssertionError("a hanging model call was answered")
        if isinstance(answer, Exception):
            raise answer
        return answer


class AgentsFake:
    """One replica's view of the agents' rows (which every replica of a test shares)."""

    def __init__(self, rows: dict[str, Agent], *, single_writer: bool) -> None:
        self._rows = rows
        self._single_writer = single_writer

    @property
    def single_writer(self) -> bool:
        return self._single_writer

    async def row(self, org_id: str, agent_id: str) -> Agent:
        row = self._rows.get(agent_id)
        if row is None or row.org_id != org_id:
            raise NotFound(f"agent {agent_id} not found", reason="AGENT_NOT_FOUND")
        return row


SETTINGS = TurnSettings(
    default_max_steps=10,
    max_steps_limit=100,
    default_context_window=128_000,
    voice_max_messages=24,
    summary_max_chars=4_000,
    summarizer_model="",
    summarizer_input_tokens=32_000,
    summarizer_timeout=5.0,
    cancel_poll_seconds=0.01,
)


@dataclass
class Mesh:
    """The fakes one test's turns run against, with the real runs table on SQLite."""

    db: Database
    runs: Runs
    memory: MemoryFake = field(default_factory=MemoryFake)
    tools: ToolsFake = field(default_factory=ToolsFake)
    model: ModelFake = field(default_factory=ModelFake)
    memory_tools: MemoryToolsFake = field(init=False)
    rows: dict[str, Agent] = field(default_factory=dict)
    replicas: list[Turns] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.memory_tools = MemoryToolsFake(self.memory)

    def turns(self, *, single_writer: bool = True, settings: TurnSettings = SETTINGS) -> Turns:
        """One agent service's turns (several of them are replicas sharing the database)."""
        turns = Turns(
            AgentsFake(self.rows, single_writer=single_writer),
            self.runs,
            memory=self.memory,
            tools=self.tools,
            memory_tools=self.memory_tools,
            model=self.model,
            settings=settings,
        )
        self.replicas.append(turns)
        return turns

    async def agent(self, org_id: str, **fields: Any) -> Agent:
        """A new agent (in the database too: runs refer to it), with an empty `human` block."""
        now = utcnow()
        values: dict[str, Any] = {
            "id": new_id("agent"),
            "org_id": org_id,
            "created_by": "user-test",
            "name": "test",
            "model": AGENT_MODEL,
            "system": "You are a test agent.",
            "summarizer_model": SUMMARIZER_MODEL,
            "created_at": now,
            "updated_at": now,
            "tool_ids": [],
            "tool_rules": [],
            "llm_options": {},
            "agent_type": "standard",
            "context_window": 0,
            "max_steps": 0,
            "embedding_model": "",
        }
        values.update(fields)
        row = Agent(**values)
        await self.db.write(AgentQueries.insert, [row])
        self.rows[row.id] = row
        self.memory.add_block(row.id, "human", limit=100)
        return row

    async def aclose(self) -> None:
        for turns in self.replicas:
            await turns.aclose()
