"""Token buckets per key and per organization, and the throttle on failed authentications."""

from __future__ import annotations

import pytest

from mnemo_core.actor import Actor
from mnemo_core.errors import ResourceExhausted
from mnemo_core.quotas import RETRY_AFTER_KEY, FailureThrottle, Rate, RateLimits

ALICE = Actor(org_id="org-a", user_id="alice", key_id="key-alice")
BOB = Actor(org_id="org-a", user_id="bob", key_id="key-bob")
CAROL = Actor(org_id="org-c", user_id="carol", key_id="key-carol")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_waits_for_the_refill() -> None:
    clock = Clock()
    limits = RateLimits(Rate(2, 3), Rate(0, 1), clock)
    for _ in range(3):
        limits.admit(ALICE)
    with pytest.raises(ResourceExhausted) as refused:
        limits.admit(ALICE)
    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.metadata == {"scope": "key", RETRY_AFTER_KEY: "1"}
    limits.admit(BOB)  # another key of the same organization is not held back
    clock.now += 0.5
    limits.admit(ALICE)
    with pytest.raises(ResourceExhausted):
        limits.admit(ALICE)


def test_the_keys_of_one_organization_share_its_bucket_and_other_organizations_do_not() -> None:
    limits = RateLimits(Rate(100, 100), Rate(1, 4), Clock())
    for actor in (ALICE, BOB, ALICE, BOB):
        limits.admit(actor)
    with pytest.raises(ResourceExhausted) as refused:
        limits.admit(BOB)
    assert refused.value.metadata["scope"] == "organization"
    limits.admit(CAROL)


def test_a_refused_call_takes_no_token_from_the_other_bucket() -> None:
    limits = RateLimits(Rate(1, 1), Rate(1, 2), Clock())
    limits.admit(ALICE)
    with pytest.raises(ResourceExhausted):
        limits.admit(ALICE)  # over its key's rate: the organization's second token stays
    limits.admit(BOB)


def test_a_zero_rate_limits_nothing() -> None:
    limits = RateLimits(Rate(0, 1), Rate(0, 1), Clock())
    for _ in range(10_000):
        limits.admit(ALICE)


def test_a_failed_key_is_known_bad_for_its_ttl_only() -> None:
    clock = Clock()
    throttle = FailureThrottle(Rate(1, 10), negative_ttl=30, clock=clock)
    throttle.failed("10.0.0.1", "digest")
    assert throttle.known_bad("digest")
    assert not throttle.known_bad("other")
    clock.now += 30
    assert not throttle.known_bad("digest")


def test_a_source_that_keeps_failing_is_refused_until_its_bucket_refills() -> None:
    clock = Clock()
    throttle = FailureThrottle(Rate(2, 5), negative_ttl=0, clock=clock)
    for n in range(5):
        throttle.check("10.0.0.1")
        throttle.failed("10.0.0.1", f"digest-{n}")
    with pytest.raises(ResourceExhausted) as refused:
        throttle.check("10.0.0.1")
    assert refused.value.reason == "AUTH_THROTTLED"
    assert refused.value.metadata[RETRY_AFTER_KEY] == "1"
    throttle.check("10.0.0.2")  # another client is not held back
    clock.now += 0.5
    throttle.check("10.0.0.1")
