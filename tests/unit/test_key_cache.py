"""The cache of authenticated keys (gateway and gRPC services): reused within its TTL, never past it, never with TTL 0."""

from __future__ import annotations

import pytest

from mnemo_core import api_keys
from mnemo_core.actor import ADMIN, ROLE_KEY, Actor, acting_as
from mnemo_core.api_keys import KeyCache
from mnemo_core.interceptors import outgoing_metadata

ADMIN_OF_B = Actor(org_id="org-b", user_id="user-b", role=ADMIN)


def test_a_cached_key_is_reused_until_its_ttl_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(api_keys.time, "monotonic", lambda: now[0])
    cache = KeyCache(ttl=5.0)
    cache.put("digest", ADMIN_OF_B)
    now[0] += 4.9
    assert cache.get("digest") == ADMIN_OF_B
    now[0] += 0.1
    assert cache.get("digest") is None


def test_a_zero_ttl_caches_nothing() -> None:
    cache = KeyCache(ttl=0)
    cache.put("digest", ADMIN_OF_B)
    assert cache.get("digest") is None


def test_outgoing_calls_carry_the_role_only_when_the_actor_has_one() -> None:
    with acting_as(ADMIN_OF_B):
        assert (ROLE_KEY, ADMIN) in outgoing_metadata("s3cret")
    with acting_as(Actor(org_id="org-b", user_id="user-b")):
        assert all(key != ROLE_KEY for key, _ in outgoing_metadata("s3cret"))
