"""Where a turn's messages go: the agent's history in the memory service, or nowhere (ephemeral turns)."""

from __future__ import annotations

from typing import Protocol

from mnemo.common.v1 import message_pb2


class Recorder(Protocol):
    """Stores a turn's steps and moves the start of its context window."""

    async def append(
        self, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        """Stores one step's messages atomically; returns them as stored."""

    async def compact(
        self, agent_id: str, keep_from: str, summary: message_pb2.Message, expected_first: str
    ) -> tuple[message_pb2.Message | None, int]:
        """Moves the window start to `keep_from` with `summary` in front; returns it as stored and how
        many messages left the window. Raises Aborted when the window no longer starts at `expected_first`."""


class EphemeralRecorder:
    """Keeps nothing: messages get their run and step but no id, and compaction is local."""

    async def append(
        self, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        stored = []
        for message in messages:
            copy = message_pb2.Message()
            copy.CopyFrom(message)
            copy.run_id, copy.step = run_id, step
            stored.append(copy)
        return stored

    async def compact(
        self, agent_id: str, keep_from: str, summary: message_pb2.Message, expected_first: str
    ) -> tuple[message_pb2.Message | None, int]:
        return summary, summary.event.evicted_count
