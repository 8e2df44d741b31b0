"""The form of an API key, shared by the gateway that reads keys and the agent service that issues them."""

from __future__ import annotations

import hashlib
import secrets

# Every key starts with this: anything else is refused without a lookup.
KEY_PREFIX = "mnemo-"
MAX_KEY_CHARS = 200


def new_key() -> str:
    """A fresh key: the prefix and 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def could_be_key(value: str) -> bool:
    """Whether `value` has the form of a key (worth looking up at all)."""
    return value.startswith(KEY_PREFIX) and len(value) <= MAX_KEY_CHARS


def key_digest(key: str) -> str:
    """The stored (and cached) form of a key. SHA-256 suffices: a 256-bit random key cannot be guessed from it."""
    return hashlib.sha256(key.encode()).hexdigest()
