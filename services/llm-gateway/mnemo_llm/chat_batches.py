"""Chat batches: many chat requests of one provider answered through its batch API, polled.

The gateway keeps a record per batch in its own schema (provider, the provider's batch id, state,
counts, and per request the model and agent for the usage ledger; never the prompts and never a
key), so a batch can be polled after a restart. While a batch runs, every GetChatBatch asks the
provider; when it has finished, the results are stored with the record, the usage of every answered
request is recorded once (operation "chat_batch"), and later calls read only the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_core.actor import current_actor
from mnemo_core.db import Database
from mnemo_core.ids import new_id, require_id
from mnemo_core.rpc_errors import status_code_of
from mnemo_core.validation import invalid
from mnemo_core.wire import to_timestamp, utcnow
from mnemo_llm.providers import (
    FINISHED_BATCH_STATES,
    BatchItem,
    BatchProgress,
    BatchProvider,
    ModelName,
    Providers,
    not_run_error,
)
from mnemo_llm.resilience import RetryPolicy
from mnemo_llm.store import BatchQueries, ChatBatchRecord
from mnemo_llm.usage import UsageLedger

MAX_BATCH_REQUESTS = 10_000
USAGE_OPERATION = "chat_batch"
_STATE_NAMES = {
    value: llm_pb2.ChatBatchState.Name(value).removeprefix("CHAT_BATCH_STATE_").lower()
    for value in llm_pb2.ChatBatchState.values()
}
_STATES = {name: value for value, name in _STATE_NAMES.items()}
_FINISHED_NAMES = tuple(_STATE_NAMES[state] for state in FINISHED_BATCH_STATES)


def batch_error(exc: errors.MnemoError) -> llm_pb2.ChatBatchError:
    """The wire form of an error: the status code Chat would have answered with, message and reason."""
    return llm_pb2.ChatBatchError(code=status_code_of(exc).value[0], message=exc.message, reason=exc.reason)


def _custom_id(index: int) -> str:
    return f"request-{index}"


class ChatBatches:
    """Submits, polls and cancels provider batches and keeps their records."""

    def __init__(
        self, db: Database, providers: Providers, retry: RetryPolicy, ledger: UsageLedger | None
    ) -> None:
        self._db = db
        self._providers = providers
        self._retry = retry
        self._ledger = ledger
        # One poll per batch at a time in this process (replicas are kept honest by the state update).
        self._polling: dict[str, asyncio.Lock] = {}

    def _validate(self, requests: Sequence[llm_pb2.ChatRequest]) -> tuple[str, BatchProvider]:
        """The provider all requests go to, once every request is valid."""
        if not requests:
            raise invalid("requests", "must not be empty")
        if len(requests) > MAX_BATCH_REQUESTS:
            raise invalid("requests", f"has {len(requests)} requests; the maximum is {MAX_BATCH_REQUESTS}")
        first = ModelName.parse(requests[0].model, "requests[0].model")
        for i, request in enumerate(requests):
            model = ModelName.parse(request.model, f"requests[{i}].model")
            if model.provider != first.provider:
                raise invalid(
                    f"requests[{i}].model",
                    f"must be a model of provider '{first.provider}' like requests[0] (one provider per batch)",
                )
            if not request.messages:
                raise invalid(f"requests[{i}].messages", "must not be empty")
        return first.provider, self._providers.resolve_batch(requests[0].model, "requests[0].model")

    async def create(
        self, request: llm_pb2.CreateChatBatchRequest, deadline: float | None
    ) -> llm_pb2.ChatBatch:
        """Submits the requests as one provider batch (or only validates them)."""
        provider_name, provider = self._validate(request.requests)
        if request.validate_only:
            return llm_pb2.ChatBatch()
        items = [
            BatchItem(_custom_id(i), ModelName.parse(r.model).model, r)
            for i, r in enumerate(request.requests)
        ]
        progress = await self._retry.call(
            deadline, lambda budget: provider.submit_batch(items, time_budget=budget)
        )
        actor = current_actor()
        row = ChatBatchRecord(
            id=new_id("chatbatch"),
            org_id=actor.org_id,
            user_id=actor.user_id,
            provider=provider_name,
            provider_batch_id=progress.provider_batch_id,
            state=_STATE_NAMES[llm_pb2.CHAT_BATCH_STATE_PENDING],
            request_count=len(items),
            succeeded_count=0,
            failed_count=0,
            requests=[
                {"model": str(ModelName.parse(r.model)), "agent_id": r.agent_id} for r in request.requests
            ],
            outcome=None,
            created_at=utcnow(),
            ended_at=None,
        )
        await self._db.write(BatchQueries.insert, row)
        return await self._advance(row, progress)

    async def get(self, batch_id: str, deadline: float | None) -> llm_pb2.ChatBatch:
        """The batch; while it runs, with the provider's current progress."""
        row = await self._row(batch_id)
        if row.state in _FINISHED_NAMES:
            return self._to_proto(row)
        async with self._polling.setdefault(row.id, asyncio.Lock()):
            try:
                row = await self._row(batch_id)
                if row.state in _FINISHED_NAMES:
                    return self._to_proto(row)
                provider = self._provider_of(row)
                progress = await self._retry.call(
                    deadline, lambda budget: provider.poll_batch(row.provider_batch_id, time_budget=budget)
                )
                return await self._advance(row, progress)
            finally:
                self._polling.pop(row.id, None)

    async def cancel(self, batch_id: str, deadline: float | None) -> llm_pb2.ChatBatch:
        """Asks the provider to stop the batch; returns it as it is then."""
        row = await self._row(batch_id)
        if row.state in _FINISHED_NAMES:
            return self._to_proto(row)
        provider = self._provider_of(row)
        progress = await self._retry.call(
            deadline, lambda budget: provider.cancel_batch(row.provider_batch_id, time_budget=budget)
        )
        if progress.state in FINISHED_BATCH_STATES:
            # Some providers stop at once: read the results the way a poll would.
            return await self.get(batch_id, deadline)
        return await self._advance(row, progress)

    def _provider_of(self, row: ChatBatchRecord) -> BatchProvider:
        return self._providers.resolve_batch(str(row.requests[0]["model"]))

    async def _row(self, batch_id: str) -> ChatBatchRecord:
        require_id(batch_id, "id")
        row = await self._db.read(BatchQueries.get, current_actor().org_id, batch_id)
        if row is None:
            raise errors.NotFound(
                f"chat batch {batch_id} not found", reason="CHAT_BATCH_NOT_FOUND", metadata={"id": batch_id}
            )
        return row

    async def _advance(self, row: ChatBatchRecord, progress: BatchProgress) -> llm_pb2.ChatBatch:
        """Stores what the provider reported; a batch that finished gets its results and usage, once."""
        values: dict[str, object] = {
            "state": _STATE_NAMES[progress.state],
            "succeeded_count": progress.succeeded,
            "failed_count": progress.failed,
        }
        outcome: llm_pb2.ChatBatch | None = None
        if progress.state in FINISHED_BATCH_STATES:
            outcome = self._outcome(row, progress)
            values["outcome"] = outcome.SerializeToString()
            values["ended_at"] = utcnow()
            values["succeeded_count"] = sum(1 for r in outcome.results if r.HasField("response"))
            values["failed_count"] = sum(1 for r in outcome.results if r.HasField("error"))
        # Only a batch that has not finished is changed: whoever finishes it records its usage.
        changed = await self._db.write(BatchQueries.advance, row.id, _FINISHED_NAMES, values)
        if outcome is not None and changed:
            self._record_usage(row, outcome)
        return self._to_proto(await self._row(row.id))

    @staticmethod
    def _outcome(row: ChatBatchRecord, progress: BatchProgress) -> llm_pb2.ChatBatch:
        """The finished batch's results in request order (and its error when it failed as a whole)."""
        found = progress.results or {}
        outcome = llm_pb2.ChatBatch()
        missing: errors.MnemoError = not_run_error(
            "ended" if progress.state == llm_pb2.CHAT_BATCH_STATE_SUCCEEDED else _STATE_NAMES[progress.state]
        )
        if progress.state == llm_pb2.CHAT_BATCH_STATE_FAILED:
            missing = errors.Unavailable(f"provider error: {progress.error}", reason="PROVIDER_BATCH_FAILED")
            outcome.error.CopyFrom(batch_error(missing))
            found = {}
        for i in range(row.request_count):
            result = found.get(_custom_id(i))
            if isinstance(result, llm_pb2.ChatResponse):
                outcome.results.add(response=result)
            else:
                outcome.results.add(error=batch_error(result or missing))
        return outcome

    def _record_usage(self, row: ChatBatchRecord, outcome: llm_pb2.ChatBatch) -> None:
        if self._ledger is None:
            return
        for request, result in zip(row.requests, outcome.results, strict=False):
            if result.HasField("response"):
                used = result.response.usage
                self._ledger.record(
                    str(request["model"]),
                    USAGE_OPERATION,
                    str(request.get("agent_id") or ""),
                    used.prompt_tokens,
                    used.completion_tokens,
                )

    @staticmethod
    def _to_proto(row: ChatBatchRecord) -> llm_pb2.ChatBatch:
        batch = llm_pb2.ChatBatch()
        if row.outcome:
            batch.ParseFromString(row.outcome)
        batch.id = row.id
        batch.state = _STATES[row.state]
        batch.provider = row.provider
        batch.provider_batch_id = row.provider_batch_id
        batch.request_count = row.request_count
        batch.succeeded_count = row.succeeded_count
        batch.failed_count = row.failed_count
        created = to_timestamp(row.created_at)
        if created is not None:
            batch.create_time.CopyFrom(created)
        ended = to_timestamp(row.ended_at)
        if ended is not None:
            batch.end_time.CopyFrom(ended)
        return batch
