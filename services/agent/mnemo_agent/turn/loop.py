"""The step loop: one model call per step, the tools it asks for, the step stored as one atomic batch.

The turn ends when the model answers without a tool call (`end_turn`), a terminal tool succeeded
(`tool_rule`), memory_finish_edits succeeded (`end_turn`), a call needs approval (`requires_approval`: the
step is stored with its calls open), the context cannot be made to fit (`context_overflow`), or at the
turn's step limit (`max_steps`). A model that repeats a memory edit it already made may call no tool on its
next step, so that it answers. Each step offers the tools the agent's rules allow (tool_rules.StepPlan);
while a required_before_exit tool has not succeeded, nothing but the step limit ends the turn, and the
model is told what it must call.
"""

from __future__ import annotations

import asyncio

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_agent import context_window as cw
from mnemo_agent.conversation import from_reply
from mnemo_agent.turn import meters
from mnemo_agent.turn.context import ContextFitter
from mnemo_agent.turn.dispatch import ToolDispatch, denied, ending
from mnemo_agent.turn.model_calls import ModelCalls
from mnemo_agent.turn.request import Decision
from mnemo_agent.turn.state import TurnState
from mnemo_core.errors import InvalidArgument
from mnemo_core.telemetry import tracer

_tracer = tracer(__name__)

# Model calls of one step before it gives up on a window the provider keeps refusing as too long.
OVERFLOW_ATTEMPTS = 4


class StepLoop:
    """Advances a turn step by step."""

    def __init__(self, context: ContextFitter, dispatch: ToolDispatch, model: ModelCalls) -> None:
        self._context = context
        self._dispatch = dispatch
        self._model = model

    async def run(self, turn: TurnState) -> turn_pb2.StopReason.ValueType:
        """Takes steps until the turn ends; returns why it ended."""
        rules = turn.agent.rules
        while turn.llm_calls < turn.max_steps:
            turn.plan = rules.plan(
                turn.schemas,
                first_step=turn.calls_this_turn == 0,
                calls=turn.calls,
                last=turn.last_step,
                succeeded=turn.succeeded,
            )
            offered, choice = turn.plan.offered, turn.plan.choice
            if turn.repeated_edit and choice != llm_pb2.TOOL_CHOICE_REQUIRED:
                # The model repeated an edit it had made: this step it can only answer (the tools stay in
                # the request, as providers want them wherever the history holds tool calls).
                choice = llm_pb2.TOOL_CHOICE_NONE
                turn.repeated_edit = False
            with _tracer.start_as_current_span(
                "agent.step", attributes={"agent.id": turn.agent.id, "step": turn.next_batch}
            ):
                request = await self._context.fit(turn, offered, choice)
                reply = await self._reply(turn, request, offered, choice)
                if reply is None:
                    if turn.pending:
                        turn.produced.extend(await self.append(turn, turn.pending))
                        turn.pending = []
                    return turn_pb2.STOP_REASON_CONTEXT_OVERFLOW
                turn.llm_calls += 1
                turn.calls_this_turn += 1
                meters.steps.add(1)
                turn.add_usage(reply.usage)
                step_messages = from_reply(reply.message)
                calls = [m.tool_call.tool_call for m in step_messages if m.HasField("tool_call")]
                if any(rules.needs_approval(call.name) for call in calls):
                    turn.produced.extend(await self.append(turn, [*turn.pending, *step_messages]))
                    turn.pending = []
                    turn.awaiting = calls
                    turn.calls.update(call.name for call in calls)
                    return turn_pb2.STOP_REASON_REQUIRES_APPROVAL
                returns = await self._dispatch.run(turn, calls)
                turn.ran(returns)
                turn.produced.extend(await self.append(turn, [*turn.pending, *step_messages, *returns]))
                turn.pending = []
                stop = self._stop(
                    turn, ending(turn, calls, returns) if calls else turn_pb2.STOP_REASON_END_TURN
                )
                if stop is not None:
                    return stop
        return turn_pb2.STOP_REASON_MAX_STEPS

    @staticmethod
    def _stop(
        turn: TurnState, stop: turn_pb2.StopReason.ValueType | None
    ) -> turn_pb2.StopReason.ValueType | None:
        """The turn's stop reason, unless a required_before_exit tool keeps it going (the model is told)."""
        if stop is None:
            return None
        missing = turn.agent.rules.missing_before_exit(turn.succeeded, turn.tools)
        if not missing:
            return stop
        if turn.llm_calls >= turn.max_steps:
            return turn_pb2.STOP_REASON_MAX_STEPS
        turn.pending.append(rule_note(missing))
        return None

    async def settle(
        self, turn: TurnState, decision: Decision | None
    ) -> turn_pb2.StopReason.ValueType | None:
        """Answers the calls a run waits for: runs or denies them as `decision` says, or closes them all
        when there is no decision (the run was cancelled). Returns the stop reason when the turn ends here."""
        calls, turn.awaiting = turn.awaiting, []
        if decision is None:
            returns = [denied(call, "the run was cancelled") for call in calls]
        else:
            returns = await self._dispatch.run(turn, calls, decision=decision)
        turn.ran(returns)
        turn.produced.extend(await self.append(turn, returns))
        if decision is None:
            return turn_pb2.STOP_REASON_CANCELLED
        return self._stop(turn, ending(turn, calls, returns))

    async def append(self, turn: TurnState, messages: list[message_pb2.Message]) -> list[message_pb2.Message]:
        """Stores a batch as the run's next step; returns the stored messages that are not inputs.

        A batch in flight completes even if the turn is cancelled meanwhile, so the run records
        exactly what is stored.
        """
        call = asyncio.ensure_future(
            turn.recorder.append(turn.agent.id, turn.run_id, turn.next_batch, messages)
        )
        try:
            stored = await asyncio.shield(call)
        except asyncio.CancelledError:
            stored = await call
            turn.produced.extend(turn.stored(stored))
            raise
        return turn.stored(stored)

    async def _reply(
        self,
        turn: TurnState,
        request: llm_pb2.ChatRequest,
        offered: list[llm_pb2.ToolSchema],
        choice: llm_pb2.ToolChoice.ValueType,
    ) -> llm_pb2.ChatResponse | None:
        """The model's reply; on a context overflow, summarizes and retries (None when nothing helps)."""
        for _ in range(OVERFLOW_ATTEMPTS):
            try:
                return await self._model.reply(turn, request)
            except InvalidArgument as exc:
                if exc.reason != cw.CONTEXT_WINDOW_EXCEEDED:
                    raise
                if not await self._context.overflowed(turn, request):
                    return None
                request = self._context.request(turn, offered, choice)
        return None


def rule_note(missing: list[str]) -> message_pb2.Message:
    """The note that tells the model its turn cannot end before it called `missing`."""
    names = " and ".join(missing)
    return message_pb2.Message(
        event=message_pb2.EventContent(
            type=message_pb2.EVENT_TYPE_TOOL_RULE,
            text=f"You cannot end your turn yet: a rule requires calling {names} first. Call it now.",
        )
    )
