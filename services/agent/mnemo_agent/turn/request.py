"""What a caller asks of a turn, checked before anything is recorded, and the settings turns run by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mnemo.common.v1 import message_pb2
from mnemo_agent.runs import Lineage
from mnemo_agent.settings import AgentSettings
from mnemo_core.validation import check_text, invalid

MAX_INPUT_MESSAGES = 100
MAX_INPUT_CHARS = 1_000_000
# The content kinds a caller may send; stored with a turn's first step, they are never part of its reply.
INPUT_KINDS = ("user", "system")


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn as a caller asks for it (SendMessage, StreamMessage, SendMessageAsync, a sleep-time agent)."""

    agent_id: str
    messages: Sequence[message_pb2.Message]
    # 0: the agent's own max_steps, else the service default.
    max_steps: int = 0
    # A retry with the same key returns (or resumes) the first run instead of starting another.
    idempotency_key: str = ""
    # Streams only: send the model's text as it is generated, not just each stored step.
    stream_tokens: bool = False
    # Who asked for the turn, when another agent's run (or a group run) did.
    lineage: Lineage = field(default_factory=Lineage)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a run's approval request."""

    approve: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The settings of the agent service that turns run by."""

    default_max_steps: int
    max_steps_limit: int
    default_context_window: int
    voice_max_messages: int
    summary_max_chars: int
    summarizer_model: str
    summarizer_input_tokens: int
    summarizer_timeout: float
    # With replicas sharing the database: how often a running turn looks for a cancel request.
    cancel_poll_seconds: float
    # Agent-to-agent messages: how deep a chain may go, and how many turns it may take in all.
    message_max_depth: int = 3
    message_max_turns: int = 12

    @classmethod
    def of(cls, settings: AgentSettings) -> TurnSettings:
        return cls(
            default_max_steps=settings.default_max_steps,
            max_steps_limit=settings.max_steps_limit,
            default_context_window=settings.default_context_window,
            voice_max_messages=settings.voice_max_messages,
            summary_max_chars=settings.summary_max_chars,
            summarizer_model=settings.summarizer_model,
            summarizer_input_tokens=settings.summarizer_input_tokens,
            summarizer_timeout=settings.summarizer_timeout,
            cancel_poll_seconds=settings.run_cancel_poll_seconds,
            message_max_depth=settings.message_max_depth,
            message_max_turns=settings.message_max_turns,
        )

    def steps(self, requested: int, agent_max_steps: int = 0) -> int:
        """The steps a turn may take: the request's, else the agent's, else the default, within the limit."""
        if not 0 <= requested <= self.max_steps_limit:
            raise invalid("max_steps", f"must be between 0 and {self.max_steps_limit}")
        return min(requested or agent_max_steps or self.default_max_steps, self.max_steps_limit)


def check_inputs(messages: Sequence[message_pb2.Message]) -> list[message_pb2.Message]:
    """The input messages of a turn: 1-100 user or system messages of storable text."""
    if not messages:
        raise invalid("messages", "send at least one message")
    if len(messages) > MAX_INPUT_MESSAGES:
        raise invalid("messages", f"at most {MAX_INPUT_MESSAGES} messages per turn")
    inputs = []
    for i, message in enumerate(messages):
        kind = message.WhichOneof("content")
        if kind not in INPUT_KINDS:
            raise invalid(f"messages[{i}]", "input messages must have user or system content")
        text = message.user.text if kind == "user" else message.system.text
        check_text(text, f"messages[{i}].{kind}.text", max_chars=MAX_INPUT_CHARS, allow_empty=False)
        clean = message_pb2.Message()
        getattr(clean, kind).CopyFrom(getattr(message, kind))
        inputs.append(clean)
    return inputs
