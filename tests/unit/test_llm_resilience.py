"""The retry policy on its own: which failures are retried, how long it waits, and when it gives up."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from mnemo.rest.retry_after import retry_after_seconds
from mnemo_core import errors
from mnemo_llm.providers import RETRY_AFTER_KEY, status_error
from mnemo_llm.resilience import RetryPolicy, is_retryable

FAST = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05, attempt_timeout=5)


class Flaky:
    """An attempt that fails with the given errors first, then returns "ok"; it records its budgets."""

    def __init__(self, *failures: errors.MnemoError) -> None:
        self.failures = list(failures)
        self.budgets: list[float] = []

    async def __call__(self, budget: float) -> str:
        self.budgets.append(budget)
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def rate_limited(wait: float | None = None) -> errors.MnemoError:
    return status_error(429, "slow down", headers={"retry-after": str(wait)} if wait is not None else None)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (529, True),
        (408, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (413, False),
        (422, False),
    ],
)
def test_rate_limits_server_errors_and_timeouts_are_retryable_and_nothing_else(
    status: int, retryable: bool
) -> None:
    assert is_retryable(status_error(status, "x")) is retryable


async def test_retryable_failures_are_retried_until_success() -> None:
    attempt = Flaky(status_error(503, "busy"), rate_limited(), status_error(500, "oops"))

    assert await FAST.call(None, attempt) == "ok"
    assert len(attempt.budgets) == 4


async def test_after_the_last_retry_the_last_failure_is_raised() -> None:
    attempt = Flaky(*[status_error(503, f"busy {n}") for n in range(5)])

    with pytest.raises(errors.Unavailable) as failed:
        await FAST.call(None, attempt)

    assert failed.value.message == "provider error: busy 3"
    assert len(attempt.budgets) == 4


async def test_a_failure_that_cannot_succeed_is_raised_at_once() -> None:
    attempt = Flaky(status_error(401, "bad key"))

    with pytest.raises(errors.PermissionDenied):
        await FAST.call(None, attempt)

    assert len(attempt.budgets) == 1


async def test_the_wait_is_at_least_what_retry_after_asks_for() -> None:
    attempt = Flaky(rate_limited(0.4))
    started = time.monotonic()

    await FAST.call(None, attempt)

    assert time.monotonic() - started >= 0.4


class Waits:
    """Records the waits between attempts instead of sleeping through them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


async def test_backoff_grows_exponentially_with_jitter_up_to_the_maximum() -> None:
    waits = Waits()
    policy = RetryPolicy(max_retries=3, initial_delay=0.1, max_delay=0.25, attempt_timeout=5, sleep=waits)
    attempt = Flaky(*[status_error(503, "busy")] * 3)

    assert await policy.call(None, attempt) == "ok"

    first, second, third = waits.seconds
    assert 0.1 <= first < 0.2
    assert 0.2 <= second <= 0.25
    assert third == 0.25


async def test_no_retry_starts_when_its_wait_would_pass_the_deadline() -> None:
    waits = Waits()
    policy = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05, attempt_timeout=5, sleep=waits)
    attempt = Flaky(rate_limited(10), status_error(503, "busy"))

    with pytest.raises(errors.ResourceExhausted):
        await policy.call(time.monotonic() + 1.0, attempt)

    assert waits.seconds == []
    assert len(attempt.budgets) == 1


async def test_each_attempt_gets_at_most_the_time_left_before_the_deadline() -> None:
    attempt = Flaky(status_error(503, "busy"))

    await FAST.call(time.monotonic() + 2.0, attempt)

    assert all(0 < budget <= 2.0 for budget in attempt.budgets)
    assert attempt.budgets[1] < attempt.budgets[0]


async def test_a_deadline_already_passed_makes_no_attempt() -> None:
    attempt = Flaky()

    with pytest.raises(errors.DeadlineExceeded):
        await FAST.call(time.monotonic() - 1, attempt)

    assert attempt.budgets == []


async def test_a_stream_is_retried_only_until_its_first_item() -> None:
    opened: list[int] = []

    def open_stream(budget: float) -> AsyncIterator[str]:
        opened.append(1)
        attempt = len(opened)

        async def items() -> AsyncIterator[str]:
            if attempt == 1:
                raise status_error(503, "busy before anything")
            yield "first"
            raise status_error(503, "busy after the first item")

        return items()

    seen: list[str] = []

    async def consume() -> None:
        async for item in FAST.stream(None, open_stream):
            seen.append(item)

    with pytest.raises(errors.Unavailable) as failed:
        await consume()

    assert seen == ["first"]
    assert failed.value.message == "provider error: busy after the first item"
    assert len(opened) == 2


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers_in_seconds_milliseconds_or_as_a_date(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds


def test_a_rate_limit_error_carries_the_wait_in_its_metadata() -> None:
    assert rate_limited(2).metadata == {RETRY_AFTER_KEY: "2.000"}
    assert rate_limited().metadata == {}
