"""API-key authentication: `Authorization: Bearer <key>`.

The bootstrap key (MNEMO_API_KEY, or the one generated into $MNEMO_HOME/api_key) is the root key: it acts
for `org-default` / `user-default` and manages every organization. Any other key is resolved like on every
gRPC service (`mnemo_core.api_keys.KeyResolver`): by the agent service's IdentityService, the answer reused
for `api_key_cache_seconds`, so a revoked key stops working within that time.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mnemo_core.actor import Actor
from mnemo_core.api_keys import ROOT_ACTOR, KeyResolver, new_key
from mnemo_core.errors import Unauthenticated
from mnemo_gateway.settings import GatewaySettings

DEFAULT_ACTOR = ROOT_ACTOR
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


async def authenticate(request: Request) -> Actor:
    """The actor for a request's bearer key; 401 without a valid one, 503 when keys cannot be checked."""
    credentials: HTTPAuthorizationCredentials | None = await _bearer(request)
    if credentials is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'", reason="API_KEY_MISSING")
    key = credentials.credentials
    root_key: str = request.app.state.api_key
    if hmac.compare_digest(key.encode(), root_key.encode()):
        return DEFAULT_ACTOR
    resolver: KeyResolver = request.app.state.backends.keys
    return await resolver.resolve(key, request.client.host if request.client else "")
