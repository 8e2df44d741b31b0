"""Secrets at rest: values sealed with Fernet (AES-128-CBC + HMAC-SHA256) before they reach the database.

The key comes from `secrets_key` (MNEMO_SECRETS_KEY: one or more comma-separated Fernet keys; the first
seals, all open, which is how a key is rotated), else from $MNEMO_HOME/secrets.key, generated with mode
0600 on first start. Columns declared `SealedText` / `SealedJson` seal on write and open on read; a value
written before sealing existed is read as it is and sealed when it is next written (or by `reseal`).
See docs/adr/0412-limits-quotas-audit-and-secrets-at-rest.md.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import JSON, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from mnemo_core.errors import Internal

PREFIX = "fernet:"
# The key a SealedJson column's stored object holds its sealed JSON under.
JSON_KEY = "sealed"
KEY_FILE = "secrets.key"


def private_dir(path: Path) -> Path:
    """Creates `path` (and parents) if it does not exist, the directory itself with mode 0700; an existing
    directory is left as it is (it may be one the operator shares on purpose)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
    return path


def private_file(path: Path) -> None:
    """Makes `path` exist with mode 0600 (an existing file of ours is narrowed to it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        with contextlib.suppress(PermissionError):
            path.chmod(0o600)


def key_file(home: Path) -> Path:
    return home / KEY_FILE


def load_keys(configured: str | None, home: Path) -> list[str]:
    """The configured keys, else the kept one, else a new one written 0600 under `home`."""
    if configured:
        return [k.strip() for k in configured.split(",") if k.strip()]
    path = key_file(home)
    if not path.is_file():
        private_dir(home)
        key = Fernet.generate_key().decode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another service of the mesh made it first
        else:
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
    return [path.read_text().strip()]


class Sealer:
    """Seals with the first key, opens with any of them."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def seal(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before values were sealed
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise Internal(
                "a stored secret cannot be opened with the configured keys (was secrets_key changed "
                "without keeping the old key?)",
                reason="SECRET_KEY_MISMATCH",
            ) from None


# The attribute of a database's SQLAlchemy dialect that holds its sealer: per database, not per process,
# so that several services (or tests) in one process each use their own key.
_ATTR = "mnemo_sealer"


def attach(dialect: Dialect, sealer: Sealer) -> None:
    """Seals and opens the sealed columns of connections of this dialect with `sealer`."""
    setattr(dialect, _ATTR, sealer)


def _of(dialect: Dialect) -> Sealer:
    sealer = getattr(dialect, _ATTR, None)
    if not isinstance(sealer, Sealer):
        raise Internal("this database has no key for its sealed columns", reason="SEALING_NOT_CONFIGURED")
    return sealer


class SealedText(TypeDecorator[str]):
    """A text column stored sealed."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else _of(dialect).seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else _of(dialect).open(value)


class SealedJson(TypeDecorator[Any]):
    """A JSON column whose value is stored sealed, as {"sealed": "fernet:..."}."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return {JSON_KEY: _of(dialect).seal(json.dumps(value, separators=(",", ":")))}

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        sealed = value.get(JSON_KEY) if isinstance(value, dict) and len(value) == 1 else None
        if isinstance(sealed, str) and sealed.startswith(PREFIX):
            return json.loads(_of(dialect).open(sealed))
        return value  # written before values were sealed
