"""The actor and the deadline of the request being served, and what outgoing calls carry."""

from __future__ import annotations

import asyncio
import time

import pytest

from mnemo_core.actor import (
    INTERNAL_TOKEN_KEY,
    ORG_KEY,
    USER_KEY,
    Actor,
    acting_as,
    current_actor,
    current_actor_or_none,
    remaining_time,
)
from mnemo_core.errors import Unauthenticated
from mnemo_core.interceptors import outgoing_metadata

ADA = Actor(org_id="org-a", user_id="user-ada")
BOB = Actor(org_id="org-b", user_id="user-bob")


def test_without_an_actor_current_actor_is_unauthenticated() -> None:
    assert current_actor_or_none() is None
    with pytest.raises(Unauthenticated):
        current_actor()


def test_acting_as_sets_the_actor_for_the_block_and_restores_the_previous_one() -> None:
    with acting_as(ADA) as outer:
        assert outer is ADA
        assert current_actor() == ADA
        with acting_as(BOB):
            assert current_actor() == BOB
        assert current_actor() == ADA
    assert current_actor_or_none() is None


def test_acting_as_restores_the_actor_even_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), acting_as(ADA):
        raise RuntimeError("boom")

    assert current_actor_or_none() is None


def test_remaining_time_counts_down_to_the_deadline_and_never_below_zero() -> None:
    assert remaining_time() is None
    with acting_as(ADA, deadline=time.monotonic() + 10):
        remaining = remaining_time()
        assert remaining is not None
        assert 9 < remaining <= 10
    with acting_as(ADA, deadline=time.monotonic() - 5):
        assert remaining_time() == 0.0
    assert remaining_time() is None


async def test_concurrent_tasks_each_keep_their_own_actor() -> None:
    async def who(actor: Actor) -> Actor:
        with acting_as(actor):
            await asyncio.sleep(0.01)
            return current_actor()

    assert list(await asyncio.gather(who(ADA), who(BOB))) == [ADA, BOB]


def test_outgoing_metadata_forwards_the_current_actor_and_the_internal_token() -> None:
    with acting_as(ADA):
        metadata = outgoing_metadata("s3cret", extra=[("x-request-id", "r1")])

    assert metadata == [
        ("x-request-id", "r1"),
        (ORG_KEY, "org-a"),
        (USER_KEY, "user-ada"),
        (INTERNAL_TOKEN_KEY, "s3cret"),
    ]


def test_outgoing_metadata_without_actor_or_token_carries_neither() -> None:
    assert outgoing_metadata(None) == []


def test_an_outgoing_call_after_the_callers_deadline_fails_at_once() -> None:
    from mnemo_core.actor import call_timeout
    from mnemo_core.errors import DeadlineExceeded

    with acting_as(Actor("org", "user"), deadline=time.monotonic() - 0.001), pytest.raises(DeadlineExceeded):
        call_timeout(None)
    with acting_as(Actor("org", "user"), deadline=time.monotonic() + 60):
        assert call_timeout(5.0) == 5.0
        timeout = call_timeout(None)
        assert timeout is not None
        assert 59 < timeout <= 60
    assert call_timeout(7.0) == 7.0
