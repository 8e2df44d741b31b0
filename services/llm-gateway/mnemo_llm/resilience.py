"""Retries of provider requests: exponential backoff with jitter on 429 / 5xx / timeouts, honouring
`Retry-After`, never past the caller's deadline.

This is the one retry mechanism of the gateway: every provider's SDK is built with its own retries off,
so that one policy (and one deadline) governs every provider alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from mnemo_core import errors
from mnemo_llm.providers import (
    PROVIDER_RATE_LIMITED,
    PROVIDER_TIMEOUT,
    PROVIDER_UNAVAILABLE,
    RETRY_AFTER_KEY,
    timeout_error,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRYABLE = frozenset({PROVIDER_RATE_LIMITED, PROVIDER_UNAVAILABLE, PROVIDER_TIMEOUT})
# An attempt with less time than this left is not worth starting.
_MIN_ATTEMPT_SECONDS = 0.05


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed provider request may succeed when sent again."""
    return isinstance(exc, errors.MnemoError) and exc.reason in _RETRYABLE


def retry_after(exc: BaseException) -> float:
    """Seconds the provider asked to wait before the next request (0 when it did not say)."""
    if isinstance(exc, errors.MnemoError):
        try:
            return float(exc.metadata.get(RETRY_AFTER_KEY, 0))
        except ValueError:
            return 0.0
    return 0.0


class _stop_before(stop_base):
    """Stops retrying when the next attempt would start too close to the deadline to be useful."""

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self._deadline is None:
            return False
        return time.monotonic() + retry_state.upcoming_sleep + _MIN_ATTEMPT_SECONDS >= self._deadline


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one provider request."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    # Seconds one attempt may take at most (the deadline may cut it shorter).
    attempt_timeout: float = 120.0
    # How a wait between attempts is spent (tests record the waits instead of sleeping through them).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def _retrying(self, deadline: float | None) -> AsyncRetrying:
        backoff = wait_exponential_jitter(
            multiplier=self.initial_delay, max=self.max_delay, jitter=self.initial_delay
        )

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            asked = retry_after(failure) if failure is not None else 0.0
            return max(backoff(state), asked)

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            log.info(
                "provider request failed (%s); retry %d in %.2f s",
                getattr(failure, "reason", type(failure).__name__),
                state.attempt_number,
                state.upcoming_sleep,
            )

        return AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.max_retries + 1), _stop_before(deadline)),
            wait=wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )

    def attempt_budget(self, deadline: float | None) -> float:
        """Seconds the next attempt may take."""
        if deadline is None:
            return self.attempt_timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise timeout_error(0.0)
        return min(self.attempt_timeout, left)

    async def call(self, deadline: float | None, attempt: Callable[[float], Awaitable[T]]) -> T:
        """Runs `attempt(time_budget)` until it succeeds, fails for good, or time or retries run out."""
        # The first attempt runs bare: tenacity's machinery (tens of microseconds) is set up only once a
        # retryable failure needs it, and that failure is replayed to it as its first attempt.
        try:
            return await attempt(self.attempt_budget(deadline))
        except errors.MnemoError as exc:
            if not self.max_retries or not is_retryable(exc):
                raise
            replay: errors.MnemoError | None = exc
        async for retry in self._retrying(deadline):
            with retry:
                if replay is not None:
                    failure, replay = replay, None
                    raise failure
                return await attempt(self.attempt_budget(deadline))
        raise AssertionError("unreachable: tenacity reraises the last failure")  # pragma: no cover

    async def stream(
        self, deadline: float | None, open_stream: Callable[[float], AsyncIterator[T]]
    ) -> AsyncIterator[T]:
        """Yields the items of `open_stream(time_budget)`, retrying only while nothing was yielded yet.

        Once the caller has seen part of a reply, a retry would repeat it: later failures are final.
        """
        async for retry in self._retrying(deadline):
            with retry:
                items = open_stream(self.attempt_budget(deadline))
                try:
                    first = await anext(items)
                except StopAsyncIteration:
                    return
                except BaseException:
                    await _close(items)
                    raise
        # Out of the retry loop: the stream is open and its first item in hand.
        try:
            yield first
            async for item in items:
                yield item
        finally:
            await _close(items)


async def _close(items: AsyncIterator[object]) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()
