"""Identities: organizations, their users, and the API keys REST callers authenticate with.

Who may do what: organizations need the root actor (the bootstrap key); users and keys need an admin
of their organization, or root for any organization. Another organization's ids are NOT_FOUND to a
non-root caller. A key's secret is returned once, at creation; only its SHA-256 is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mnemo_agent.models import AgentRow, ApiKeyRow, OrganizationRow, UserRow
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

RowT = TypeVar("RowT", OrganizationRow, UserRow, ApiKeyRow)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key and its secret, which exists nowhere else."""

    row: ApiKeyRow
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
    session: AsyncSession, query: Select[RowT], model: Any, listing: str, size: int, token: str
) -> tuple[list[RowT], str]:
    """One page of `query`, oldest first, and the token of the next one."""
    limit = page_size(size)
    position = decode_token(token, listing)
    if position is not None:
        created, last_id = position.time("t"), position.text("i")
        query = query.where(
            or_(model.created_at > created, and_(model.created_at == created, model.id > last_id))
        )
    rows = list(await session.scalars(query.order_by(model.created_at, model.id).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, ""
    rows = rows[:limit]
    return rows, encode_token(listing, t=rows[-1].created_at.isoformat(), i=rows[-1].id)


class Identities:
    """Organizations, users and API keys, with the permission rules above."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _managed_org(self, session: AsyncSession, actor: Actor, org_id: str) -> str:
        """The organization a user or key call is about (empty: the actor's), if the actor manages it."""
        if not actor.is_admin:
            raise PermissionDenied(
                "only an admin key manages users and API keys", reason="ADMIN_ROLE_REQUIRED"
            )
        org_id = require_id(org_id, "org_id") if org_id else actor.org_id
        if org_id != actor.org_id and not actor.is_root:
            raise _org_not_found(org_id)
        if await session.get(OrganizationRow, org_id) is None:
            raise _org_not_found(org_id)
        return org_id

    # Organizations

    async def create_organization(self, actor: Actor, name: str) -> OrganizationRow:
        _require_root(actor)
        name = _name(name, "organization.name")
        row = OrganizationRow(id=new_id("org"), name=name, created_at=utcnow())
        try:
            async with self._db.write() as session:
                if await session.scalar(select(OrganizationRow.id).where(OrganizationRow.name == name)):
                    raise AlreadyExists(f"an organization named {name!r} exists", reason="NAME_TAKEN")
                session.add(row)
        except IntegrityError:
            raise AlreadyExists(f"an organization named {name!r} exists", reason="NAME_TAKEN") from None
        return row

    async def get_organization(self, actor: Actor, org_id: str) -> OrganizationRow:
        _require_root(actor)
        require_id(org_id, "org_id")
        async with self._db.read() as session:
            row = await session.get(OrganizationRow, org_id)
        if row is None:
            raise _org_not_found(org_id)
        return row

    async def list_organizations(
        self, actor: Actor, *, size: int = 0, token: str = ""
    ) -> tuple[list[OrganizationRow], str]:
        _require_root(actor)
        async with self._db.read() as session:
            return await _page(session, select(OrganizationRow), OrganizationRow, "orgs", size, token)

    async def delete_organization(self, actor: Actor, org_id: str) -> None:
        """Deletes an organization with its users and keys; refused while it has agents."""
        _require_root(actor)
        require_id(org_id, "org_id")
        if org_id == DEFAULT_ORG:
            raise FailedPrecondition(
                "the default organization cannot be deleted", reason="DEFAULT_ORGANIZATION"
            )
        async with self._db.write() as session:
            if await session.get(OrganizationRow, org_id) is None:
                raise _org_not_found(org_id)
            agents = await session.scalar(select(func.count()).where(AgentRow.org_id == org_id))
            if agents:
                raise FailedPrecondition(
                    f"organization {org_id} still has {agents} agents; delete them first",
                    reason="ORGANIZATION_HAS_AGENTS",
                    metadata={"agents": str(agents)},
                )
            await session.execute(delete(ApiKeyRow).where(ApiKeyRow.org_id == org_id))
            await session.execute(delete(UserRow).where(UserRow.org_id == org_id))
            await session.execute(delete(OrganizationRow).where(OrganizationRow.id == org_id))

    # Users

    async def create_user(self, actor: Actor, org_id: str, name: str) -> UserRow:
        name = _name(name, "user.name")
        taken = AlreadyExists(f"a user named {name!r} exists in the organization", reason="NAME_TAKEN")
        try:
            async with self._db.write() as session:
                org_id = await self._managed_org(session, actor, org_id)
                existing = select(UserRow.id).where(UserRow.org_id == org_id, UserRow.name == name)
                if await session.scalar(existing):
                    raise taken
                row = UserRow(id=new_id("user"), org_id=org_id, name=name, created_at=utcnow())
                session.add(row)
        except IntegrityError:
            raise taken from None
        return row

    async def _user(self, session: AsyncSession, org_id: str, user_id: str, field: str) -> UserRow:
        require_id(user_id, field)
        row = await session.get(UserRow, user_id)
        if row is None or row.org_id != org_id:
            raise NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")
        return row

    async def get_user(self, actor: Actor, org_id: str, user_id: str) -> UserRow:
        async with self._db.read() as session:
            org_id = await self._managed_org(session, actor, org_id)
            return await self._user(session, org_id, user_id, "user_id")

    async def list_users(
        self, actor: Actor, org_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[UserRow], str]:
        async with self._db.read() as session:
            org_id = await self._managed_org(session, actor, org_id)
            query = select(UserRow).where(UserRow.org_id == org_id)
            return await _page(session, query, UserRow, f"users:{org_id}", size, token)

    async def delete_user(self, actor: Actor, org_id: str, user_id: str) -> None:
        """Deletes a user and its keys."""
        async with self._db.write() as session:
            org_id = await self._managed_org(session, actor, org_id)
            await self._user(session, org_id, user_id, "user_id")
            if user_id == DEFAULT_USER:
                raise FailedPrecondition("the default user cannot be deleted", reason="DEFAULT_USER")
            await session.execute(delete(ApiKeyRow).where(ApiKeyRow.user_id == user_id))
            await session.execute(delete(UserRow).where(UserRow.id == user_id))

    # API keys

    async def create_key(self, actor: Actor, org_id: str, user_id: str, name: str, role: str) -> CreatedKey:
        """A new key acting for `user_id` (empty: the caller) with `role`; its secret is in the result only."""
        name = _name(name, "api_key.name")
        if role not in KEY_ROLES:
            raise invalid("api_key.role", f"must be one of {', '.join(KEY_ROLES)}")
        taken = AlreadyExists(f"an active API key named {name!r} exists", reason="NAME_TAKEN")
        secret = new_key()
        try:
            async with self._db.write() as session:
                org_id = await self._managed_org(session, actor, org_id)
                if not user_id:
                    if org_id != actor.org_id:
                        raise invalid("api_key.user_id", "required for a key of another organization")
                    user_id = actor.user_id
                await self._user(session, org_id, user_id, "api_key.user_id")
                existing = select(ApiKeyRow.id).where(
                    ApiKeyRow.org_id == org_id, ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None)
                )
                if await session.scalar(existing):
                    raise taken
                row = ApiKeyRow(
                    id=new_id("key"),
                    org_id=org_id,
                    user_id=user_id,
                    name=name,
                    role=role,
                    display_prefix=secret[:DISPLAY_PREFIX_CHARS],
                    secret_sha256=key_digest(secret),
                    created_at=utcnow(),
                )
                session.add(row)
        except IntegrityError:
            raise taken from None
        return CreatedKey(row=row, secret=secret)

    async def _key(self, session: AsyncSession, org_id: str, key_id: str) -> ApiKeyRow:
        require_id(key_id, "key_id")
        row = await session.get(ApiKeyRow, key_id)
        if row is None or row.org_id != org_id or row.revoked_at is not None:
            raise NotFound(f"API key {key_id} not found", reason="API_KEY_NOT_FOUND")
        return row

    async def get_key(self, actor: Actor, org_id: str, key_id: str) -> ApiKeyRow:
        async with self._db.read() as session:
            org_id = await self._managed_org(session, actor, org_id)
            return await self._key(session, org_id, key_id)

    async def list_keys(
        self, actor: Actor, org_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[ApiKeyRow], str]:
        """The organization's active keys."""
        async with self._db.read() as session:
            org_id = await self._managed_org(session, actor, org_id)
            query = select(ApiKeyRow).where(ApiKeyRow.org_id == org_id, ApiKeyRow.revoked_at.is_(None))
            return await _page(session, query, ApiKeyRow, f"keys:{org_id}", size, token)

    async def revoke_key(self, actor: Actor, org_id: str, key_id: str) -> None:
        """Revokes a key; the row stays (without a usable secret) as a record."""
        async with self._db.write() as session:
            org_id = await self._managed_org(session, actor, org_id)
            await self._key(session, org_id, key_id)
            await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(revoked_at=utcnow()))

    async def authenticate(self, secret: str) -> KeyHolder:
        """Whom an active key acts for; UNAUTHENTICATED for anything else (never saying why)."""
        refused = Unauthenticated("invalid API key", reason="API_KEY_INVALID")
        if not could_be_key(secret):
            raise refused
        query = select(ApiKeyRow).where(
            ApiKeyRow.secret_sha256 == key_digest(secret), ApiKeyRow.revoked_at.is_(None)
        )
        async with self._db.read() as session:
            row = await session.scalar(query)
        if row is None:
            raise refused
        return KeyHolder(org_id=row.org_id, user_id=row.user_id, key_id=row.id, role=row.role)
