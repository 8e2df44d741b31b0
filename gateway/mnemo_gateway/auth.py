"""API-key authentication: `Authorization: Bearer <key>`. One key, acting for the default org and user.

Full identity management (organizations, users, revocable hashed keys) belongs to the agent
service's IdentityService; until it exists every valid key acts as `org-default` / `user-default`.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mnemo_core.actor import Actor
from mnemo_core.errors import Unauthenticated
from mnemo_gateway.settings import GatewaySettings

DEFAULT_ACTOR = Actor(org_id="org-default", user_id="user-default")
_bearer = HTTPBearer(auto_error=False, description="The API key printed by `mnemo server`.")


def api_key_file(settings: GatewaySettings) -> Path:
    """Where the generated API key is kept."""
    return settings.home / "api_key"


def ensure_api_key(settings: GatewaySettings) -> str:
    """The REST API key: MNEMO_API_KEY, else the kept one, else a new one written (mode 0600)."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = api_key_file(settings)
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = f"mnemo-{secrets.token_urlsafe(32)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


async def authenticate(request: Request) -> Actor:
    """The actor for a request's bearer key; 401 without a valid one."""
    credentials: HTTPAuthorizationCredentials | None = await _bearer(request)
    expected: str = request.app.state.api_key
    if credentials is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'", reason="API_KEY_MISSING")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthenticated("invalid API key", reason="API_KEY_INVALID")
    return DEFAULT_ACTOR
