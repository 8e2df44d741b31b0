"""The actor: which organization and user a request acts for.

An external RPC carries an API key and an internal hop carries the actor in signed metadata; the server
interceptor puts the actor in a context variable for the handler, and outgoing calls forward it, signed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from mnemo_core.errors import DeadlineExceeded, PermissionDenied, Unauthenticated

ORG_KEY = "x-mnemo-org-id"
USER_KEY = "x-mnemo-user-id"
# The caller's role (ROOT, ADMIN or MEMBER), resolved from the API key at the edge; trusted like the org and
# user entries, only with the mesh's signature (mesh_credential.py).
ROLE_KEY = "x-mnemo-role"
# External gRPC callers authenticate like REST ones: `authorization: Bearer <API key>`.
AUTHORIZATION_KEY = "authorization"
ROOT = "root"
ADMIN = "admin"
MEMBER = "member"


@dataclass(frozen=True, slots=True)
class Actor:
    """The organization and user a request acts for; every query filters by `org_id`.

    `role` says what the caller may manage (identity service): "root", "admin", or "member" (also
    when empty: calls between services and callers that state no role).
    """

    org_id: str
    user_id: str
    role: str = ""
    # The API key the caller presented, when it presented one (rate limits and the audit log name it).
    key_id: str = ""

    @property
    def is_root(self) -> bool:
        return self.role == ROOT

    @property
    def is_admin(self) -> bool:
        """Whether the actor manages its organization's users and keys (root does too)."""
        return self.role in (ROOT, ADMIN)


def require_admin(actor: Actor, what: str) -> None:
    """PERMISSION_DENIED (`ADMIN_ROLE_REQUIRED`) unless `actor` is an admin (or root): `what` says of what."""
    if not actor.is_admin:
        raise PermissionDenied(f"only an admin key may {what}", reason="ADMIN_ROLE_REQUIRED")


_actor: ContextVar[Actor | None] = ContextVar("mnemo_actor", default=None)
# Monotonic deadline of the RPC being served, so outgoing calls never outlive it.
_deadline: ContextVar[float | None] = ContextVar("mnemo_deadline", default=None)


def current_actor() -> Actor:
    """The actor of the request being served; UNAUTHENTICATED when there is none."""
    actor = _actor.get()
    if actor is None:
        raise Unauthenticated("request carries no actor")
    return actor


def current_actor_or_none() -> Actor | None:
    """The actor of the request being served, if any."""
    return _actor.get()


@contextlib.contextmanager
def acting_as(actor: Actor, *, deadline: float | None = None) -> Iterator[Actor]:
    """Runs the block on behalf of `actor` (and, optionally, within a monotonic deadline)."""
    token = _actor.set(actor)
    deadline_token = _deadline.set(deadline)
    try:
        yield actor
    finally:
        # A streaming handler abandoned by its client is closed from another context, where these
        # tokens cannot be reset (and need not be: that context never had them set).
        with contextlib.suppress(ValueError):
            _deadline.reset(deadline_token)
        with contextlib.suppress(ValueError):
            _actor.reset(token)


def remaining_time() -> float | None:
    """Seconds left before the served RPC's deadline, or None when it has none."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def call_timeout(timeout: float | None) -> float | None:
    """The timeout of an outgoing call: never past the served RPC's deadline.

    DEADLINE_EXCEEDED at once when that deadline has passed (grpc would not reliably refuse a zero timeout).
    """
    remaining = remaining_time()
    if remaining is None:
        return timeout
    if remaining <= 0:
        raise DeadlineExceeded("the caller's deadline has passed", reason="DEADLINE_EXCEEDED")
    return remaining if timeout is None else min(timeout, remaining)
