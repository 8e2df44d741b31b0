"""API keys: their form (shared by the agent service that issues them and everyone who reads them), and the
one way a key becomes an actor, used by the REST gateway and by every gRPC service alike."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from mnemo.agent.v1 import identity_pb2, identity_pb2_grpc
from mnemo_core.actor import ADMIN, MEMBER, ROOT, Actor, acting_as
from mnemo_core.errors import NotFound, Unauthenticated
from mnemo_core.quotas import FailureThrottle

# Every key starts with this: anything else is refused without a lookup.
KEY_PREFIX = "mnemo-"
MAX_KEY_CHARS = 200
# Whom the root (bootstrap) key acts for.
ROOT_ACTOR = Actor(org_id="org-default", user_id="user-default", role=ROOT, key_id="root")
# Whom a process acts as when it asks the identity service about a key (no key is known yet).
AUTHENTICATOR = Actor(org_id="org-default", user_id="authenticator")
CACHE_SIZE = 10_000
AUTH_TIMEOUT = 10.0


def new_key() -> str:
    """A fresh key: the prefix and 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def could_be_key(value: str) -> bool:
    """Whether `value` has the form of a key (worth looking up at all)."""
    return value.startswith(KEY_PREFIX) and len(value) <= MAX_KEY_CHARS


def key_digest(key: str) -> str:
    """The stored (and cached) form of a key. SHA-256 suffices: a 256-bit random key cannot be guessed from it."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCache:
    """Actors of recently authenticated keys, by the SHA-256 of the key, for a few seconds."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, Actor]] = OrderedDict()

    def get(self, digest: str) -> Actor | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, actor = entry
        if time.monotonic() >= expires:
            del self._entries[digest]
            return None
        return actor

    def put(self, digest: str, actor: Actor) -> None:
        if self._ttl <= 0:
            return
        self._entries[digest] = (time.monotonic() + self._ttl, actor)
        self._entries.move_to_end(digest)
        if len(self._entries) > CACHE_SIZE:
            self._entries.popitem(last=False)


class KeyResolver:
    """Turns an API key into its actor (organization, user, admin or member) through IdentityService.

    Answers are cached for `ttl` seconds, so a revoked key keeps working for at most that long. Only
    `root_key` (the bootstrap key, when the process knows it) resolves to root; created keys never do.
    With `failures`, a key that just failed fails again at once and a client address that keeps failing
    is throttled (AUTH_THROTTLED), both without asking the identity service.
    """

    def __init__(
        self,
        identity: identity_pb2_grpc.IdentityServiceAsyncStub,
        ttl: float,
        root_key: str | None = None,
        failures: FailureThrottle | None = None,
    ) -> None:
        self._identity = identity
        self._cache = KeyCache(ttl)
        self._root_key = root_key.encode() if root_key else None
        self._failures = failures

    async def resolve(self, key: str, source: str = "") -> Actor:
        """The actor of `key` sent from `source` (the client's address); UNAUTHENTICATED when it is unknown
        or revoked, UNAVAILABLE when keys cannot be checked."""
        if self._root_key is not None and hmac.compare_digest(key.encode(), self._root_key):
            return ROOT_ACTOR
        invalid = Unauthenticated("invalid API key", reason="API_KEY_INVALID")
        if not could_be_key(key):
            raise invalid
        digest = key_digest(key)
        actor = self._cache.get(digest)
        if actor is not None:
            return actor
        if self._failures is not None:
            if self._failures.known_bad(digest):
                raise invalid
            self._failures.check(source)
        try:
            with acting_as(AUTHENTICATOR, deadline=time.monotonic() + AUTH_TIMEOUT):
                holder = await self._identity.AuthenticateApiKey(
                    identity_pb2.AuthenticateApiKeyRequest(secret=key)
                )
        except (Unauthenticated, NotFound):
            if self._failures is not None:
                self._failures.failed(source, digest)
            raise invalid from None
        actor = Actor(
            org_id=holder.org_id,
            user_id=holder.user_id,
            role=ADMIN if holder.role == identity_pb2.ROLE_ADMIN else MEMBER,
            key_id=holder.key_id,
        )
        self._cache.put(digest, actor)
        return actor
