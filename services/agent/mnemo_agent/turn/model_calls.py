"""A step's model call: through a provider batch, streamed token by token, or as one whole reply."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mnemo.llm.v1 import llm_pb2
from mnemo_agent.turn.events import TokenDelta
from mnemo_agent.turn.ports import Model
from mnemo_agent.turn.state import TurnState
from mnemo_core.errors import Unavailable, Unimplemented

log = logging.getLogger(__name__)

# How long to trust that the llm-gateway cannot stream before asking again.
NO_STREAMING_FOR = 60.0


class ModelCalls:
    """Calls the model for a turn's steps."""

    def __init__(self, model: Model, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._model = model
        self._clock = clock
        self._no_streaming_until = 0.0

    async def reply(self, turn: TurnState, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        """The model's reply to the turn's next step; its text goes to the turn's sink as it comes when
        the turn streams tokens."""
        if turn.llm is not None:
            return await turn.llm(request, f"{turn.run_id}:{turn.next_batch}")
        if turn.sink is not None and turn.stream_tokens and self._clock() >= self._no_streaming_until:
            try:
                return await self._streamed(turn, request)
            except Unimplemented:
                log.info("the llm-gateway cannot stream; falling back to whole replies")
                self._no_streaming_until = self._clock() + NO_STREAMING_FOR
        return await self._model.chat(request)

    async def _streamed(self, turn: TurnState, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        step = turn.next_batch
        completed: llm_pb2.ChatResponse | None = None
        # Read to the end (`completed` is the last event), so the stream closes normally on both sides.
        async for event in self._model.stream(request):
            kind = event.WhichOneof("event")
            if kind == "content_delta":
                turn.emit(TokenDelta(turn.run_id, step, False, event.content_delta))
            elif kind == "reasoning_delta":
                turn.emit(TokenDelta(turn.run_id, step, True, event.reasoning_delta))
            elif kind == "completed":
                completed = event.completed
        if completed is None:
            raise Unavailable("the model stream ended without a completed reply", reason="STREAM_INCOMPLETE")
        return completed
