"""Model calls of a provider-mode batch, gathered into provider batches.

The turns of such a batch run the normal step loop concurrently; their model calls come here instead
of going to `LlmService.Chat`. Calls are gathered for a short window, or until every live turn of
the batch waits for the model, then submitted as one `CreateChatBatch` per provider (a *round*),
polled with `GetChatBatch`, and each waiting turn gets its own reply or its own error back. Each
step of a multi-step turn is one more round.

Every call is named by its run and step (`<run id>:<step>`). The rounds waiting for a provider are
written to the batch's record (`on_change`), so that a restarted service polls them again (`adopt`)
and hands their results to the resumed turns instead of submitting their calls once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_core.errors import MnemoError, NotFound
from mnemo_core.rpc_errors import from_status

log = logging.getLogger(__name__)

FINISHED = (
    llm_pb2.CHAT_BATCH_STATE_SUCCEEDED,
    llm_pb2.CHAT_BATCH_STATE_FAILED,
    llm_pb2.CHAT_BATCH_STATE_CANCELLED,
    llm_pb2.CHAT_BATCH_STATE_EXPIRED,
)

ChatCaller = Callable[[llm_pb2.ChatRequest, str], Awaitable[llm_pb2.ChatResponse]]


@dataclass(frozen=True, slots=True)
class PendingRound:
    """A submitted round: the gateway's chat batch id and the calls in it, in request order."""

    chat_batch_id: str
    calls: list[str]


@dataclass
class _Call:
    key: str
    request: llm_pb2.ChatRequest
    reply: asyncio.Future[llm_pb2.ChatResponse] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _settle(call: _Call, result: llm_pb2.ChatBatchResult | MnemoError) -> None:
    if call.reply.done():  # the turn was cancelled meanwhile
        return
    if isinstance(result, MnemoError):
        call.reply.set_exception(result)
    elif result.HasField("response"):
        call.reply.set_result(result.response)
    else:
        call.reply.set_exception(from_status(result.error.code, result.error.message, result.error.reason))


def _consume(future: asyncio.Future[llm_pb2.ChatResponse]) -> None:
    """Marks an unclaimed result's error as seen (a resumed turn may never ask for it)."""
    if not future.cancelled():
        future.exception()


class ChatRounds:
    """Gathers one batch's model calls into provider batches and hands each call its result."""

    def __init__(
        self,
        llm: llm_pb2_grpc.LlmServiceAsyncStub,
        *,
        window: float,
        poll_interval: float,
        on_change: Callable[[list[PendingRound], int], Awaitable[None]],
        rounds_done: int = 0,
    ) -> None:
        self._llm = llm
        self._window = window
        self._poll_interval = poll_interval
        self._on_change = on_change
        self._live = 0
        self._waiting: list[_Call] = []
        self._timer: asyncio.TimerHandle | None = None
        self._pending: dict[str, PendingRound] = {}
        # Results of rounds submitted before a restart, by call, for the resumed turns.
        self._adopted: dict[str, asyncio.Future[llm_pb2.ChatResponse]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rounds = rounds_done

    # ----- turns -----

    def join(self) -> None:
        """A turn of the batch starts."""
        self._live += 1

    def leave(self) -> None:
        """A turn of the batch ended: the others may be all that is left to wait for."""
        self._live -= 1
        self._flush_if_all_wait()

    async def chat(self, request: llm_pb2.ChatRequest, key: str) -> llm_pb2.ChatResponse:
        """The reply to one model call, through the next round (or a round adopted after a restart)."""
        adopted = self._adopted.pop(key, None)
        if adopted is not None:
            return await adopted
        call = _Call(key, request)
        self._waiting.append(call)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window, self._flush)
        self._flush_if_all_wait()
        return await call.reply

    def _flush_if_all_wait(self) -> None:
        if self._waiting and len(self._waiting) >= self._live:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        calls = [call for call in self._waiting if not call.reply.done()]
        self._waiting = []
        by_provider: dict[str, list[_Call]] = defaultdict(list)
        for call in calls:
            by_provider[call.request.model.partition("/")[0].lower()].append(call)
        for group in by_provider.values():
            self._spawn(self._submit(group))

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- rounds -----

    async def _submit(self, calls: list[_Call]) -> None:
        try:
            created = await self._llm.CreateChatBatch(
                llm_pb2.CreateChatBatchRequest(requests=[call.request for call in calls])
            )
        except MnemoError as exc:
            for call in calls:
                _settle(call, exc)
            return
        self.rounds += 1
        pending = PendingRound(created.batch.id, [call.key for call in calls])
        await self._changed(add=pending)
        await self._finish(pending, calls)

    def adopt(self, rounds: Sequence[PendingRound]) -> None:
        """Polls rounds submitted before a restart; their results wait for the resumed turns' calls."""
        for pending in rounds:
            calls = [_Call(key, llm_pb2.ChatRequest()) for key in pending.calls]
            for call in calls:
                call.reply.add_done_callback(_consume)
                self._adopted[call.key] = call.reply
            self._pending[pending.chat_batch_id] = pending
            self._spawn(self._finish(pending, calls))

    async def _finish(self, pending: PendingRound, calls: list[_Call]) -> None:
        """Polls a round until the provider has finished it, then settles every call."""
        try:
            batch = await self._poll(pending.chat_batch_id)
        except MnemoError as exc:
            for call in calls:
                _settle(call, exc)
        else:
            results = list(batch.results)
            for i, call in enumerate(calls):
                if i < len(results):
                    _settle(call, results[i])
                else:
                    _settle(call, from_status(batch.error.code, batch.error.message, batch.error.reason))
        await self._changed(done=pending.chat_batch_id)

    async def _poll(self, chat_batch_id: str) -> llm_pb2.ChatBatch:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                got = await self._llm.GetChatBatch(llm_pb2.GetChatBatchRequest(id=chat_batch_id))
            except NotFound:
                raise
            except MnemoError as exc:
                # The gateway or the provider is briefly away: the batch goes on at the provider.
                log.warning("polling chat batch %s failed (%s); trying again", chat_batch_id, exc.message)
                continue
            if got.batch.state in FINISHED:
                return got.batch

    async def _changed(self, *, add: PendingRound | None = None, done: str = "") -> None:
        if add is not None:
            self._pending[add.chat_batch_id] = add
        self._pending.pop(done, None)
        try:
            await self._on_change(list(self._pending.values()), self.rounds)
        except MnemoError as exc:
            log.warning("recording the batch's provider rounds failed: %s", exc.message)

    @property
    def pending(self) -> list[PendingRound]:
        """The rounds waiting for a provider now."""
        return list(self._pending.values())

    async def aclose(self) -> None:
        """Stops polling (the rounds stay recorded and are polled again after a restart)."""
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
