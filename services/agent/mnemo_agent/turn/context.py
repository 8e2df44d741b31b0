"""Fitting a step into the model's window: the request, the summaries that make room, the pressure note.

A step's request is compiled from the system prompt (core memory, memory statistics), the window and
what is pending. At >= 90 % of the window the oldest part is summarized away before the call (up to
three rounds); at >= 75 % the model is told once that its context is filling. When the provider says
the window overflowed anyway, its window is trusted from then on and the window compacted again.
"""

from __future__ import annotations

import logging

from mnemo.llm.v1 import llm_pb2
from mnemo_agent import context_window as cw
from mnemo_agent.conversation import to_chat_messages
from mnemo_agent.prompt import compile_system_prompt
from mnemo_agent.turn.events import MessagesStored
from mnemo_agent.turn.ports import Memory
from mnemo_agent.turn.request import TurnSettings
from mnemo_agent.turn.state import TurnState, kind
from mnemo_core.errors import Aborted, Cancelled, MnemoError
from mnemo_core.telemetry import tracer
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

# Compaction rounds before a step's call (a voice agent's first call goes out at once instead).
FIT_ROUNDS = 3


class ContextFitter:
    """Builds each step's request within the window, summarizing the oldest messages when needed."""

    def __init__(self, memory: Memory, summarizer: cw.Summarizer, settings: TurnSettings) -> None:
        self._memory = memory
        self._summarizer = summarizer
        self._settings = settings

    def request(
        self, turn: TurnState, tools: list[llm_pb2.ToolSchema], choice: llm_pb2.ToolChoice.ValueType
    ) -> llm_pb2.ChatRequest:
        """The step's request as the window stands."""
        history = turn.history
        limit = self._settings.voice_max_messages
        if turn.voice and len(history) > limit:
            body = history[len(history) - limit :]
            while body and kind(body[0]) == "tool_return":
                body = body[1:]
            chat = to_chat_messages([*body, *turn.pending])
        elif turn.pending and kind(turn.pending[0]) == "tool_return":
            chat = to_chat_messages([*history, *turn.pending])
        else:
            chat = [*turn.chat.of(history), *to_chat_messages(turn.pending)]
        system = compile_system_prompt(
            turn.agent.system,
            turn.blocks,
            history_count=turn.history_count + len(turn.pending),
            in_context_count=len(turn.history) + len(turn.pending),
            now=utcnow(),
            memory_tool_set=turn.agent.memory_tool_set,
        ).text
        options = turn.agent.llm_options
        request = llm_pb2.ChatRequest(
            model=turn.agent.model,
            messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content=system), *chat],
            tools=tools,
            tool_choice=choice if tools else llm_pb2.TOOL_CHOICE_UNSPECIFIED,
            max_tokens=int(options.get("max_tokens", 0)),
            parallel_tool_calls=bool(options.get("parallel_tool_calls", False)),
            agent_id=turn.agent.id if not turn.ephemeral else "",
        )
        if options.get("temperature") is not None:
            request.temperature = float(options["temperature"])
        return request

    async def fit(
        self, turn: TurnState, tools: list[llm_pb2.ToolSchema], choice: llm_pb2.ToolChoice.ValueType
    ) -> llm_pb2.ChatRequest:
        """The step's request, after summarizing when it would fill >= 90 % of the window."""
        request = self.request(turn, tools, choice)
        window = turn.window_tokens
        estimate = cw.chat_tokens(request)
        # A voice agent's first call goes out at once; its context is kept small instead.
        rounds = 0 if turn.voice and turn.calls_this_turn == 0 else FIT_ROUNDS
        while estimate >= cw.PROACTIVE_THRESHOLD * window and rounds > 0:
            rounds -= 1
            if not await self.compact(turn):
                break
            request = self.request(turn, tools, choice)
            estimate = cw.chat_tokens(request)
        if (
            estimate >= cw.PRESSURE_THRESHOLD * window
            and not turn.ephemeral
            and not cw.pressure_noted([*turn.history, *turn.pending])
        ):
            turn.pending.append(cw.pressure_event(min(99, estimate * 100 // window)))
            request = self.request(turn, tools, choice)
        return request

    async def overflowed(self, turn: TurnState, request: llm_pb2.ChatRequest) -> bool:
        """Makes room after the provider refused `request` as too long; False when nothing can leave."""
        log.info("agent %s: the model reported a context overflow; summarizing", turn.agent.id)
        # The provider's window is smaller than the configured one: trust it from now on.
        turn.window_tokens = min(turn.window_tokens, max(256, cw.chat_tokens(request) * 9 // 10))
        return await self.compact(turn) > 0

    async def compact(self, turn: TurnState) -> int:
        """Evicts the oldest ~30 % of the window behind a summary; returns how many messages left it."""
        front = 1 if turn.history and cw.is_front_summary(turn.history[0]) else 0
        body = turn.history[front:]
        cut = cw.choose_cut(body)
        if cut is None:
            return 0
        evicted = body[:cut]
        previous = turn.history[0].event.text if front else ""
        limit = max(200, min(self._settings.summary_max_chars, turn.window_tokens * 4 // 10))
        model = turn.agent.summarizer_model or self._settings.summarizer_model or turn.agent.model
        with _tracer.start_as_current_span("agent.summarize", attributes={"agent.id": turn.agent.id}):
            try:
                text = await self._summarizer.summarize(model, turn.agent.id, previous, evicted, limit=limit)
                event = cw.summary_event(text, len(evicted))
            except Cancelled:
                raise
            except MnemoError as exc:
                # The summarizer must never fail the turn: drop the oldest messages and say so.
                log.warning(
                    "agent %s: summarizer failed (%s); truncating instead", turn.agent.id, exc.message
                )
                event = cw.truncation_event(
                    len(evicted), f"the summarizer failed: {exc.message}", previous, limit
                )
            try:
                stored, count = await turn.recorder.compact(turn.agent.id, body[cut].id, event, body[0].id)
            except Aborted:
                turn.history = (await self._memory.window(turn.agent.id)).messages
                return 0
        turn.history = ([stored] if stored is not None else []) + body[cut:]
        if stored is not None:
            turn.emit(MessagesStored([stored]))
        return max(count, 1)
