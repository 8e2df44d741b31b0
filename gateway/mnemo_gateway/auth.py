"""API-key authentication: `Authorization: Bearer <key>`.

The bootstrap key (MNEMO_API_KEY, or the one generated into $MNEMO_HOME/api_key) is the root key: it acts
for `org-default` / `user-default` and manages every organization. Any other key is resolved by the agent
service's IdentityService; the answer is reused for `api_key_cache_seconds`, so a revoked key stops
working within that time.
"""

from __future__ import annotations

import hmac
import os
import time
from collections import OrderedDict
from pathlib import Path

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mnemo.agent.v1 import identity_pb2
from mnemo_core.actor import ADMIN, MEMBER, ROOT, Actor, acting_as
from mnemo_core.api_keys import could_be_key, key_digest, new_key
from mnemo_core.errors import NotFound, Unauthenticated
from mnemo_core.quotas import FailureThrottle
from mnemo_gateway.settings import GatewaySettings

DEFAULT_ACTOR = Actor(org_id="org-default", user_id="user-default", role=ROOT, key_id="root")
# Whom the gateway acts as when it asks the identity service about a key (no key is known yet).
AUTHENTICATOR = Actor(org_id="org-default", user_id="gateway")
CACHE_SIZE = 10_000
AUTH_TIMEOUT = 10.0
_bearer = HTTPBearer(
    auto_error=False, description="The API key printed by `mnemo server`, or one it created."
)


def api_key_file(settings: GatewaySettings) -> Path:
    """Where the generated API key is kept."""
    return settings.home / "api_key"


def ensure_api_key(settings: GatewaySettings) -> str:
    """The root API key: MNEMO_API_KEY, else the kept one, else a new one written (mode 0600)."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = api_key_file(settings)
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


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


async def authenticate(request: Request) -> Actor:
    """The actor for a request's bearer key; 401 without a valid one, 503 when keys cannot be checked."""
    credentials: HTTPAuthorizationCredentials | None = await _bearer(request)
    if credentials is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'", reason="API_KEY_MISSING")
    key = credentials.credentials
    root_key: str = request.app.state.api_key
    if hmac.compare_digest(key.encode(), root_key.encode()):
        return DEFAULT_ACTOR
    invalid = Unauthenticated("invalid API key", reason="API_KEY_INVALID")
    if not could_be_key(key):
        raise invalid
    cache: KeyCache = request.app.state.key_cache
    digest = key_digest(key)
    actor = cache.get(digest)
    if actor is not None:
        return actor
    # Unknown and wrong keys: a recent failure fails again at once, and a client that keeps failing is
    # throttled, both without asking the identity service.
    failures: FailureThrottle = request.app.state.limits.failures
    if failures.known_bad(digest):
        raise invalid
    source = request.client.host if request.client else ""
    failures.check(source)
    identity = request.app.state.backends.identity
    try:
        with acting_as(AUTHENTICATOR, deadline=time.monotonic() + AUTH_TIMEOUT):
            holder = await identity.AuthenticateApiKey(identity_pb2.AuthenticateApiKeyRequest(secret=key))
    except (Unauthenticated, NotFound):
        failures.failed(source, digest)
        raise invalid from None
    actor = Actor(
        org_id=holder.org_id,
        user_id=holder.user_id,
        role=ADMIN if holder.role == identity_pb2.ROLE_ADMIN else MEMBER,
        key_id=holder.key_id,
    )
    cache.put(digest, actor)
    return actor
