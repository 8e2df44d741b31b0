"""BatchService: proto <-> batches of turns."""

from __future__ import annotations

from typing import Any

from mnemo.agent.v1 import batch_pb2, batch_pb2_grpc
from mnemo_agent.batches import AUTO, CONCURRENT, PROVIDER, Batches, BatchView
from mnemo_agent.servicers.runs import run_to_proto
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import invalid
from mnemo_core.wire import to_timestamp

Context = Any

_BATCH_MODES = EnumNames(batch_pb2.BatchMode)


def batch_to_proto(view: BatchView) -> batch_pb2.Batch:
    """The wire form of a batch."""
    return batch_pb2.Batch(
        id=view.row.id,
        status=batch_pb2.BATCH_STATUS_COMPLETED if view.completed else batch_pb2.BATCH_STATUS_RUNNING,
        runs=[run_to_proto(run) for run in view.runs],
        create_time=to_timestamp(view.row.created_at),
        mode=_BATCH_MODES.value(view.row.mode),
        chat_batch_ids=[r["chat_batch_id"] for r in view.row.pending_rounds or []],
        provider_round_count=view.row.round_count or 0,
    )


class BatchServicer(batch_pb2_grpc.BatchServiceServicer):
    """BatchService over Batches."""

    def __init__(self, batches: Batches) -> None:
        self._batches = batches

    async def CreateBatch(
        self, request: batch_pb2.CreateBatchRequest, context: Context
    ) -> batch_pb2.CreateBatchResponse:
        mode = AUTO if request.mode == batch_pb2.BATCH_MODE_UNSPECIFIED else _BATCH_MODES.name(request.mode)
        if mode not in (AUTO, CONCURRENT, PROVIDER):
            raise invalid("mode", "must be AUTO, CONCURRENT or PROVIDER")
        view = await self._batches.create(
            current_actor(), [(t.agent_id, list(t.messages), t.max_steps) for t in request.turns], mode=mode
        )
        return batch_pb2.CreateBatchResponse(batch=batch_to_proto(view))

    async def GetBatch(
        self, request: batch_pb2.GetBatchRequest, context: Context
    ) -> batch_pb2.GetBatchResponse:
        return batch_pb2.GetBatchResponse(
            batch=batch_to_proto(await self._batches.get(current_actor().org_id, request.batch_id))
        )
