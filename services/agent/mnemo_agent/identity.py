"""Identities: organizations, their users, and the API keys REST callers authenticate with.

Who may do what: organizations need the root actor (the bootstrap key); users and keys need an admin
of their organization, or root for any organization. Another organization's ids are NOT_FOUND to a
non-root caller. A key's secret is returned once, at creation; only its SHA-256 is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from mnemo_agent.identity_store import (
    ApiKey,
    KeyQueries,
    Organization,
    OrganizationQueries,
    User,
    UserQueries,
)
from mnemo_agent.org_holdings import OrgHoldings
from mnemo_core.actor import ADMIN, MEMBER, Actor
from mnemo_core.api_keys import KEY_PREFIX, could_be_key, key_digest, new_key
from mnemo_core.db import Database
from mnemo_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow

DEFAULT_ORG = "org-default"
DEFAULT_USER = "user-default"
KEY_ROLES = (ADMIN, MEMBER)
# Characters of a secret shown to recognise a key: the fixed prefix plus 6 random ones.
DISPLAY_PREFIX_CHARS = len(KEY_PREFIX) + 6


class _Listed(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


ListedT = TypeVar("ListedT", bound=_Listed)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key and its secret, which exists nowhere else."""

    row: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """Whom an authenticated key acts for."""

    org_id: str
    user_id: str
    key_id: str
    role: str


def _org_not_found(org_id: str) -> NotFound:
    return NotFound(f"organization {org_id} not found", reason="ORGANIZATION_NOT_FOUND")


def _require_root(actor: Actor) -> None:
    if not actor.is_root:
        raise PermissionDenied("only the root key manages organizations", reason="ROOT_ROLE_REQUIRED")


def _name(value: str, field: str) -> str:
    return check_text(value.strip(), field, max_chars=200, allow_empty=False)


async def _page(
    db: Database,
    read: Callable[[Connection, tuple[datetime, str] | None, int], Sequence[ListedT]],
    listing: str,
    size: int,
    token: str,
) -> tuple[list[ListedT], str]:
    """One page of what `read` lists (oldest first, after a position, at most a limit), and the next token."""
    limit = page_size(size)
    position = decode_token(token, listing)
    after = None if position is None else (position.time("t"), position.text("i"))
    rows = list(await db.read(read, after, limit + 1))
    if len(rows) <= limit:
        return rows, ""
    rows = rows[:limit]
    return rows, encode_token(listing, t=rows[-1].created_at.isoformat(), i=rows[-1].id)


def _managed_org(conn: Connection, actor: Actor, org_id: str) -> str:
    """The organization a user or key call is about (empty: the actor's), if the actor manages it."""
    if not actor.is_admin:
        raise PermissionDenied("only an admin key manages users and API keys", reason="ADMIN_ROLE_REQUIRED")
    org_id = require_id(org_id, "org_id") if org_id else actor.org_id
    if org_id != actor.org_id and not actor.is_root:
        raise _org_not_found(org_id)
    if OrganizationQueries.get(conn, org_id) is None:
        raise _org_not_found(org_id)
    return org_id


def _user(conn: Connection, org_id: str, user_id: str, field: str) -> User:
    require_id(user_id, field)
    user = UserQueries.get(conn, org_id, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")
    return user


def _key(conn: Connection, org_id: str, key_id: str) -> ApiKey:
    require_id(key_id, "key_id")
    key = KeyQueries.active(conn, org_id, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} not found", reason="API_KEY_NOT_FOUND")
    return key


class Identities:
    """Organizations, users and API keys, with the permission rules above."""

    def __init__(self, db: Database, holdings: OrgHoldings | None = None) -> None:
        self._db = db
        # What an organization still owns in the other services (None: not asked, in tests of this alone).
        self._holdings = holdings

    # Organizations

    async def create_organization(self, actor: Actor, name: str) -> Organization:
        _require_root(actor)
        name = _name(name, "organization.name")
        org = Organization(id=new_id("org"), name=name, created_at=utcnow())
        taken = AlreadyExists(f"an organization named {name!r} exists", reason="NAME_TAKEN")

        def tx(conn: Connection) -> None:
            if OrganizationQueries.named(conn, name):
                raise taken
            OrganizationQueries.insert(conn, org)

        try:
            await self._db.write(tx)
        except IntegrityError:
            raise taken from None
        return org

    async def get_organization(self, actor: Actor, org_id: str) -> Organization:
        _require_root(actor)
        require_id(org_id, "org_id")
        org = await self._db.read(OrganizationQueries.get, org_id)
        if org is None:
            raise _org_not_found(org_id)
        return org

    async def list_organizations(
        self, actor: Actor, *, size: int = 0, token: str = ""
    ) -> tuple[list[Organization], str]:
        _require_root(actor)
        return await _page(
            self._db,
            lambda conn, after, limit: OrganizationQueries.page(conn, after=after, limit=limit),
            "orgs",
            size,
            token,
        )

    async def delete_organization(self, actor: Actor, org_id: str) -> None:
        """Deletes an organization with its users and keys; refused while it has agents, or blocks,
        sources, custom tools or MCP servers in the other services."""
        _require_root(actor)
        require_id(org_id, "org_id")
        if org_id == DEFAULT_ORG:
            raise FailedPrecondition(
                "the default organization cannot be deleted", reason="DEFAULT_ORGANIZATION"
            )

        def check(conn: Connection) -> None:
            if OrganizationQueries.get(conn, org_id) is None:
                raise _org_not_found(org_id)
            agents = OrganizationQueries.agent_count(conn, org_id)
            if agents:
                raise FailedPrecondition(
                    f"organization {org_id} still has {agents} agents; delete them first",
                    reason="ORGANIZATION_HAS_AGENTS",
                    metadata={"agents": str(agents)},
                )

        await self._db.read(check)
        if self._holdings is not None:
            owned = await self._holdings.remaining(org_id)
            if owned:
                raise FailedPrecondition(
                    f"organization {org_id} still owns {', '.join(owned)}; delete them first",
                    reason="ORGANIZATION_NOT_EMPTY",
                    metadata={"owns": ",".join(owned)},
                )

        def tx(conn: Connection) -> None:
            check(conn)
            OrganizationQueries.delete(conn, org_id)

        await self._db.write(tx)

    # Users

    async def create_user(self, actor: Actor, org_id: str, name: str) -> User:
        name = _name(name, "user.name")
        taken = AlreadyExists(f"a user named {name!r} exists in the organization", reason="NAME_TAKEN")

        def tx(conn: Connection) -> User:
            managed = _managed_org(conn, actor, org_id)
            if UserQueries.named(conn, managed, name):
                raise taken
            user = User(id=new_id("user"), org_id=managed, name=name, created_at=utcnow())
            UserQueries.insert(conn, user)
            return user

        try:
            return await self._db.write(tx)
        except IntegrityError:
            raise taken from None

    async def get_user(self, actor: Actor, org_id: str, user_id: str) -> User:
        return await self._db.read(
            lambda conn: _user(conn, _managed_org(conn, actor, org_id), user_id, "user_id")
        )

    async def list_users(
        self, actor: Actor, org_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[User], str]:
        managed = await self._db.read(_managed_org, actor, org_id)
        return await _page(
            self._db,
            lambda conn, after, limit: UserQueries.page(conn, managed, after=after, limit=limit),
            f"users:{managed}",
            size,
            token,
        )

    async def delete_user(self, actor: Actor, org_id: str, user_id: str) -> None:
        """Deletes a user and its keys."""

        def tx(conn: Connection) -> None:
            _user(conn, _managed_org(conn, actor, org_id), user_id, "user_id")
            if user_id == DEFAULT_USER:
                raise FailedPrecondition("the default user cannot be deleted", reason="DEFAULT_USER")
            UserQueries.delete(conn, user_id)

        await self._db.write(tx)

    # API keys

    async def create_key(self, actor: Actor, org_id: str, user_id: str, name: str, role: str) -> CreatedKey:
        """A new key acting for `user_id` (empty: the caller) with `role`; its secret is in the result only."""
        name = _name(name, "api_key.name")
        if role not in KEY_ROLES:
            raise invalid("api_key.role", f"must be one of {', '.join(KEY_ROLES)}")
        taken = AlreadyExists(f"an active API key named {name!r} exists", reason="NAME_TAKEN")
        secret = new_key()

        def tx(conn: Connection) -> ApiKey:
            managed = _managed_org(conn, actor, org_id)
            holder = user_id
            if not holder:
                if managed != actor.org_id:
                    raise invalid("api_key.user_id", "required for a key of another organization")
                holder = actor.user_id
            _user(conn, managed, holder, "api_key.user_id")
            if KeyQueries.named(conn, managed, name):
                raise taken
            key = ApiKey(
                id=new_id("key"),
                org_id=managed,
                user_id=holder,
                name=name,
                role=role,
                display_prefix=secret[:DISPLAY_PREFIX_CHARS],
                secret_sha256=key_digest(secret),
                created_at=utcnow(),
            )
            KeyQueries.insert(conn, key)
            return key

        try:
            key = await self._db.write(tx)
        except IntegrityError:
            raise taken from None
        return CreatedKey(row=key, secret=secret)

    async def get_key(self, actor: Actor, org_id: str, key_id: str) -> ApiKey:
        return await self._db.read(lambda conn: _key(conn, _managed_org(conn, actor, org_id), key_id))

    async def list_keys(
        self, actor: Actor, org_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[ApiKey], str]:
        """The organization's active keys."""
        managed = await self._db.read(_managed_org, actor, org_id)
        return await _page(
            self._db,
            lambda conn, after, limit: KeyQueries.page(conn, managed, after=after, limit=limit),
            f"keys:{managed}",
            size,
            token,
        )

    async def revoke_key(self, actor: Actor, org_id: str, key_id: str) -> None:
        """Revokes a key; the row stays (without a usable secret) as a record."""

        def tx(conn: Connection) -> None:
            _key(conn, _managed_org(conn, actor, org_id), key_id)
            KeyQueries.revoke(conn, key_id, utcnow())

        await self._db.write(tx)

    async def authenticate(self, secret: str) -> KeyHolder:
        """Whom an active key acts for; UNAUTHENTICATED for anything else (never saying why)."""
        refused = Unauthenticated("invalid API key", reason="API_KEY_INVALID")
        if not could_be_key(secret):
            raise refused
        key = await self._db.read(KeyQueries.by_digest, key_digest(secret))
        if key is None:
            raise refused
        return KeyHolder(org_id=key.org_id, user_id=key.user_id, key_id=key.id, role=key.role)
