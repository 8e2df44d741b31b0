"""Rate limits and size caps every surface shares: token buckets per API key and per organization, a
throttle on failed authentications, and the largest message a gRPC peer may send.

The buckets live in the process that serves the call. With several replicas of a service (or of the
gateway) each replica keeps its own buckets, so the effective limit is the setting times the replicas a
client's calls are spread over (docs/adr/0412-limits-quotas-audit-and-secrets-at-rest.md).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from mnemo_core.actor import Actor, current_actor_or_none
from mnemo_core.call_hooks import around_each_call
from mnemo_core.errors import ResourceExhausted

# The largest gRPC message a server or channel of the mesh accepts (a 60 MiB source file upload plus
# its envelope fits; the REST gateway's body cap defaults to the same figure).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Metadata key of ResourceExhausted errors that says when to retry; becomes google.rpc.RetryInfo on gRPC
# and the Retry-After header on REST.
RETRY_AFTER_KEY = "retry_after_seconds"
# Buckets (and remembered failures) kept per limiter; the least recently used are dropped beyond it, which
# only ever gives a forgotten caller a full bucket again.
MAX_TRACKED = 50_000
AUTHORIZATION_KEY = "authorization"


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` tokens refill continuously up to `burst`; a rate of 0 means unlimited."""

    per_second: float
    burst: float

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0


class TokenBucket:
    """A classic token bucket: each admitted call takes one token."""

    __slots__ = ("_rate", "_tokens", "_updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate = rate
        self._tokens = rate.burst
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._rate.burst, self._tokens + elapsed * self._rate.per_second)
        self._updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0 when one is now)."""
        self._refill(now)
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self._rate.per_second

    def take(self) -> None:
        """Takes a token (call after `wait_time` returned 0)."""
        self._tokens -= 1


class Buckets:
    """Token buckets by key, least recently used dropped beyond MAX_TRACKED."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self._clock())
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def now(self) -> float:
        return self._clock()


def rate_limited(scope: str, wait: float) -> ResourceExhausted:
    """The error of a call over its `scope` rate ("key" or "organization"), retryable after `wait` s."""
    seconds = max(1, math.ceil(wait))
    return ResourceExhausted(
        f"too many requests for this {scope}; retry in {seconds} s",
        reason="RATE_LIMITED",
        metadata={"scope": scope, RETRY_AFTER_KEY: str(seconds)},
    )


class RateLimits:
    """Per-key and per-organization buckets; a call is admitted only when both have a token."""

    def __init__(self, per_key: Rate, per_org: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = Buckets(per_key, clock)
        self._orgs = Buckets(per_org, clock)
        self._clock = clock

    def admit(self, actor: Actor, key_id: str = "") -> None:
        """Takes a token for the actor's key and organization; RESOURCE_EXHAUSTED (RATE_LIMITED) when over."""
        now = self._clock()
        checks: list[tuple[str, TokenBucket]] = []
        if not self._keys.rate.unlimited:
            key = key_id or actor.key_id or f"user:{actor.org_id}/{actor.user_id}"
            checks.append(("key", self._keys.bucket(key)))
        if not self._orgs.rate.unlimited:
            checks.append(("organization", self._orgs.bucket(actor.org_id)))
        for scope, bucket in checks:
            wait = bucket.wait_time(now)
            if wait > 0:
                raise rate_limited(scope, wait)
        for _, bucket in checks:
            bucket.take()


class FailureThrottle:
    """Remembers keys that failed to authenticate and throttles a source's failed attempts.

    A key that just failed fails again at once for `negative_ttl` seconds without asking the identity
    service; each source (client address) may fail `rate.per_second` times a second (burst `rate.burst`)
    before its further attempts are refused with RATE_LIMITED, also without asking.
    """

    def __init__(self, rate: Rate, negative_ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._sources = Buckets(rate, clock)
        self._ttl = negative_ttl
        self._clock = clock
        self._failed: OrderedDict[str, float] = OrderedDict()

    def known_bad(self, digest: str) -> bool:
        """Whether this key digest failed within the negative TTL."""
        expires = self._failed.get(digest)
        if expires is None:
            return False
        if self._clock() >= expires:
            del self._failed[digest]
            return False
        return True

    def check(self, source: str) -> None:
        """RATE_LIMITED when the source has used up its failed attempts; call before asking about a key."""
        if self._sources.rate.unlimited:
            return
        wait = self._sources.bucket(source).wait_time(self._clock())
        if wait > 0:
            raise ResourceExhausted(
                f"too many failed authentications from this client; retry in {max(1, math.ceil(wait))} s",
                reason="AUTH_THROTTLED",
                metadata={RETRY_AFTER_KEY: str(max(1, math.ceil(wait)))},
            )

    def failed(self, source: str, digest: str) -> None:
        """Records a failed authentication of `digest` from `source`."""
        if self._ttl > 0:
            self._failed[digest] = self._clock() + self._ttl
            self._failed.move_to_end(digest)
            if len(self._failed) > MAX_TRACKED:
                self._failed.popitem(last=False)
        if not self._sources.rate.unlimited:
            bucket = self._sources.bucket(source)
            if bucket.wait_time(self._clock()) == 0:
                bucket.take()


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Rate-limits calls that an external client authenticated with an API key (`authorization` metadata).

    Placed after the actor interceptor, so the resolved actor is in context and errors are mapped there.
    Hops inside the mesh carry no `authorization` entry: a turn's many internal calls are never counted,
    and a REST call is counted once, by the gateway.
    """

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        presented = any(k == AUTHORIZATION_KEY for k, _ in handler_call_details.invocation_metadata or ())
        if not presented:
            return handler
        return _admitting(handler, self._limits)


def _admitting(
    handler: grpc.RpcMethodHandler[Any, Any], limits: RateLimits
) -> grpc.RpcMethodHandler[Any, Any]:
    def admit(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        actor = current_actor_or_none()
        if actor is not None:
            limits.admit(actor)

    return around_each_call(handler, admit)
