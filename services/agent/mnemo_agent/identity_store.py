"""SQL for organizations, users and API keys. No rules here (who may do what is identity.py's): this reads and
writes, on one connection inside a unit of work, and returns dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, true, update

from mnemo_agent.models import ApiKeyRow, OrganizationRow, UserRow
from mnemo_agent.store import agents_t
from mnemo_core.db import table_of

orgs_t = table_of(OrganizationRow)
users_t = table_of(UserRow)
keys_t = table_of(ApiKeyRow)


@dataclass(frozen=True, slots=True)
class Organization:
    """A tenant; "org-default" (made by the migration) is the one the root key acts for."""

    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    """A user of an organization."""

    id: str
    org_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key: only the SHA-256 of its secret is kept. Revoked keys stay, with `revoked_at` set."""

    id: str
    org_id: str
    user_id: str
    name: str
    role: str
    display_prefix: str
    # Hex SHA-256 of the secret.
    secret_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None


def _oldest_first(table: Any, query: Any, after: tuple[datetime, str] | None, limit: int) -> Any:
    """`query` ordered oldest first, from the row after `after` (created_at, id), at most `limit` rows."""
    position: Any = true()
    if after is not None:
        created, last_id = after
        position = or_(
            table.c.created_at > created, and_(table.c.created_at == created, table.c.id > last_id)
        )
    return query.where(position).order_by(table.c.created_at, table.c.id).limit(limit)


class OrganizationQueries:
    """Organizations on one connection."""

    @staticmethod
    def get(conn: Connection, org_id: str) -> Organization | None:
        row = conn.execute(select(orgs_t).where(orgs_t.c.id == org_id)).first()
        return None if row is None else Organization(**row._asdict())

    @staticmethod
    def named(conn: Connection, name: str) -> bool:
        return conn.scalar(select(orgs_t.c.id).where(orgs_t.c.name == name)) is not None

    @staticmethod
    def insert(conn: Connection, org: Organization) -> None:
        conn.execute(insert(orgs_t).values(**dataclasses.asdict(org)))

    @staticmethod
    def page(conn: Connection, *, after: tuple[datetime, str] | None, limit: int) -> list[Organization]:
        query = _oldest_first(orgs_t, select(orgs_t), after, limit)
        return [Organization(**row._asdict()) for row in conn.execute(query)]

    @staticmethod
    def agent_count(conn: Connection, org_id: str) -> int:
        return int(conn.scalar(select(func.count()).where(agents_t.c.org_id == org_id)) or 0)

    @staticmethod
    def delete(conn: Connection, org_id: str) -> None:
        """Deletes an organization with its users and keys."""
        conn.execute(delete(keys_t).where(keys_t.c.org_id == org_id))
        conn.execute(delete(users_t).where(users_t.c.org_id == org_id))
        conn.execute(delete(orgs_t).where(orgs_t.c.id == org_id))


class UserQueries:
    """Users on one connection."""

    @staticmethod
    def get(conn: Connection, org_id: str, user_id: str) -> User | None:
        row = conn.execute(select(users_t).where(users_t.c.id == user_id, users_t.c.org_id == org_id)).first()
        return None if row is None else User(**row._asdict())

    @staticmethod
    def named(conn: Connection, org_id: str, name: str) -> bool:
        found = conn.scalar(select(users_t.c.id).where(users_t.c.org_id == org_id, users_t.c.name == name))
        return found is not None

    @staticmethod
    def insert(conn: Connection, user: User) -> None:
        conn.execute(insert(users_t).values(**dataclasses.asdict(user)))

    @staticmethod
    def page(conn: Connection, org_id: str, *, after: tuple[datetime, str] | None, limit: int) -> list[User]:
        query = _oldest_first(users_t, select(users_t).where(users_t.c.org_id == org_id), after, limit)
        return [User(**row._asdict()) for row in conn.execute(query)]

    @staticmethod
    def delete(conn: Connection, user_id: str) -> None:
        """Deletes a user and its keys."""
        conn.execute(delete(keys_t).where(keys_t.c.user_id == user_id))
        conn.execute(delete(users_t).where(users_t.c.id == user_id))


_ACTIVE_KEY = keys_t.c.revoked_at.is_(None)


class KeyQueries:
    """API keys on one connection."""

    @staticmethod
    def active(conn: Connection, org_id: str, key_id: str) -> ApiKey | None:
        row = conn.execute(
            select(keys_t).where(keys_t.c.id == key_id, keys_t.c.org_id == org_id, _ACTIVE_KEY)
        ).first()
        return None if row is None else ApiKey(**row._asdict())

    @staticmethod
    def named(conn: Connection, org_id: str, name: str) -> bool:
        """Whether an active key of the organization has this name."""
        found = conn.scalar(
            select(keys_t.c.id).where(keys_t.c.org_id == org_id, keys_t.c.name == name, _ACTIVE_KEY)
        )
        return found is not None

    @staticmethod
    def insert(conn: Connection, key: ApiKey) -> None:
        conn.execute(insert(keys_t).values(**dataclasses.asdict(key)))

    @staticmethod
    def page(
        conn: Connection, org_id: str, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[ApiKey]:
        """The organization's active keys."""
        query = _oldest_first(
            keys_t, select(keys_t).where(keys_t.c.org_id == org_id, _ACTIVE_KEY), after, limit
        )
        return [ApiKey(**row._asdict()) for row in conn.execute(query)]

    @staticmethod
    def revoke(conn: Connection, key_id: str, when: datetime) -> None:
        conn.execute(update(keys_t).where(keys_t.c.id == key_id).values(revoked_at=when))

    @staticmethod
    def by_digest(conn: Connection, digest: str) -> ApiKey | None:
        """The active key whose secret has this SHA-256."""
        row = conn.execute(select(keys_t).where(keys_t.c.secret_sha256 == digest, _ACTIVE_KEY)).first()
        return None if row is None else ApiKey(**row._asdict())
