"""The mesh's internal credential: a random key per install that signs the actor on every internal hop.

The key itself never crosses the wire. A hop carries `x-mnemo-actor-signature: v1.<unix time>.<hex>`, an
HMAC-SHA256 of the time and the actor (org, user, role) under the key; a service accepts actor metadata only
with a signature that matches and is at most `MAX_SKEW_SECONDS` old. Someone who reads one hop off the wire
can replay that actor for that long, but cannot act for anyone else, and never as root unless root's own
hop was read (see docs/adr/0411-api-keys-on-grpc-and-a-signed-actor-on-internal-hops.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from mnemo_core.actor import ORG_KEY, ROLE_KEY, USER_KEY, Actor

SIGNATURE_KEY = "x-mnemo-actor-signature"
# Clock skew between pods plus the longest a hop waits before it is served.
MAX_SKEW_SECONDS = 300
_VERSION = "v1"
FILE_NAME = "internal_key"


def key_file(home: Path) -> Path:
    """Where the generated internal key of an install is kept."""
    return home / FILE_NAME


def ensure_key(home: Path) -> str:
    """The install's internal key: read from `home`, or generated there (mode 0600) on first use.

    Safe when several processes start at once: the file appears whole (linked from a private temporary
    file) or not at all, and the first one written wins.
    """
    path = key_file(home)
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            return existing
    home.mkdir(parents=True, exist_ok=True)
    temporary = home / f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()
    return path.read_text().strip()


@functools.lru_cache(maxsize=4)
def _keyed(key: str) -> hmac.HMAC:
    # The keyed state, made once: copying it is about half the cost of keying a new HMAC per call.
    return hmac.new(key.encode(), digestmod=hashlib.sha256)


def _mac(key: str, stamp: str, actor: Actor) -> str:
    mac = _keyed(key).copy()
    mac.update("\n".join((_VERSION, stamp, actor.org_id, actor.user_id, actor.role)).encode())
    return mac.hexdigest()


def sign(key: str, actor: Actor, now: float | None = None) -> str:
    """The signature an internal hop carries for `actor`."""
    stamp = str(int(time.time() if now is None else now))
    return f"{_VERSION}.{stamp}.{_mac(key, stamp, actor)}"


def verify(key: str, actor: Actor, signature: str, now: float | None = None) -> bool:
    """Whether `signature` was made with `key` for exactly `actor`, recently enough."""
    parts = signature.split(".")
    if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(parts[1])) > MAX_SKEW_SECONDS:
        return False
    return hmac.compare_digest(parts[2], _mac(key, parts[1], actor))


def actor_metadata(key: str, actor: Actor) -> list[tuple[str, str]]:
    """The metadata an internal hop carries on behalf of `actor`: the actor and its signature."""
    metadata = [(ORG_KEY, actor.org_id), (USER_KEY, actor.user_id), (SIGNATURE_KEY, sign(key, actor))]
    if actor.role:
        metadata.append((ROLE_KEY, actor.role))
    return metadata
