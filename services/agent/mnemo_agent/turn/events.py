"""What a turn reports as it goes: one tagged union, mapped by its consumers with one exhaustive `match`.

A stream sends `RunStarted` first, then `MessagesStored` once per stored step (a replayed run sends all
its messages in one) with `TokenDelta`s in between when tokens are streamed, and the `TurnResult` last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mnemo.common.v1 import message_pb2, turn_pb2


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The turn's run is recorded: the first event of every stream."""

    run_id: str


@dataclass(frozen=True, slots=True)
class MessagesStored:
    """Messages of the turn as stored (one step's, or a replayed run's)."""

    messages: Sequence[message_pb2.Message]


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Model output as it is generated (streams with tokens)."""

    run_id: str
    step: int
    reasoning: bool
    text: str


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What a turn produced: the last event of a stream, and what a plain send returns."""

    run_id: str
    messages: list[message_pb2.Message]
    usage: turn_pb2.Usage
    stop_reason: turn_pb2.StopReason.ValueType


TurnEvent = RunStarted | MessagesStored | TokenDelta | TurnResult

# Receives a turn's events as they happen; it must not block (a stream puts them on a queue).
Sink = Callable[[TurnEvent], None]
