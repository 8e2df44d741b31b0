"""The actor and the deadline of the request being served, and what outgoing calls carry."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import pytest

from mnemo_core import mesh_credential
from mnemo_core.actor import (
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


def test_outgoing_metadata_forwards_the_current_actor_signed_and_never_the_credential() -> None:
    with acting_as(ADA):
        metadata = outgoing_metadata("s3cret", extra=[("x-request-id", "r1")])

    values = dict(metadata)
    assert metadata[:3] == [("x-request-id", "r1"), (ORG_KEY, "org-a"), (USER_KEY, "user-ada")]
    assert mesh_credential.verify("s3cret", ADA, values[mesh_credential.SIGNATURE_KEY])
    assert not any("s3cret" in value for _, value in metadata)


def test_outgoing_metadata_without_an_actor_carries_no_actor() -> None:
    assert outgoing_metadata("s3cret") == []


def test_a_signature_holds_for_its_actor_only_and_only_for_a_while() -> None:
    member = Actor("org-a", "user-ada", "member")
    signature = mesh_credential.sign("s3cret", member, now=1_000_000)

    assert mesh_credential.verify("s3cret", member, signature, now=1_000_010)
    assert not mesh_credential.verify("other", member, signature, now=1_000_010)
    assert not mesh_credential.verify("s3cret", Actor("org-a", "user-ada", "root"), signature, now=1_000_010)
    assert not mesh_credential.verify(
        "s3cret", Actor("org-b", "user-ada", "member"), signature, now=1_000_010
    )
    assert not mesh_credential.verify(
        "s3cret", member, signature, now=1_000_000 + mesh_credential.MAX_SKEW_SECONDS + 1
    )
    assert not mesh_credential.verify("s3cret", member, "v1.x.y")


def test_the_internal_key_is_generated_once_private_and_then_kept(tmp_path: Path) -> None:
    first = mesh_credential.ensure_key(tmp_path / "home")
    second = mesh_credential.ensure_key(tmp_path / "home")

    path = mesh_credential.key_file(tmp_path / "home")
    assert first == second
    assert len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "home").iterdir()] == [path.name]


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
