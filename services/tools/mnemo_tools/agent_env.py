"""Environment variables of an agent's custom tools (API keys and other secrets).

Values are stored by the tools service and handed only to the sandbox of that agent's runs; no API
returns them, only their names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sqlalchemy import Connection

from mnemo_core.db import Database
from mnemo_core.ids import require_id
from mnemo_core.validation import invalid
from mnemo_core.wire import utcnow
from mnemo_tools.store import EnvQueries

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_VARIABLES = 100
MAX_VALUE_CHARS = 32_768


class AgentEnvironments:
    """Reads and writes the variables of one organization's agents."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def update(
        self, org_id: str, agent_id: str, set_: Mapping[str, str], unset: Sequence[str]
    ) -> list[str]:
        """Sets and removes variables; returns the names after the change."""
        require_id(agent_id, "agent_id")
        for name, value in set_.items():
            if not NAME.match(name):
                raise invalid(f"set[{name}]", "names are letters, digits and '_', not starting with a digit")
            if len(value) > MAX_VALUE_CHARS or "\x00" in value:
                raise invalid(f"set[{name}]", f"values are at most {MAX_VALUE_CHARS} characters, without NUL")
        overlap = set(set_) & set(unset)
        if overlap:
            raise invalid("unset", f"{', '.join(sorted(overlap))} cannot be both set and unset")
        now = utcnow()

        def tx(conn: Connection) -> list[str]:
            names = EnvQueries.change(conn, org_id, agent_id, set_, unset, now)
            if len(names) > MAX_VARIABLES:
                raise invalid("set", f"an agent has at most {MAX_VARIABLES} tool variables")
            return names

        return await self._db.write(tx)

    async def names(self, org_id: str, agent_id: str) -> list[str]:
        """The names of an agent's variables, sorted."""
        require_id(agent_id, "agent_id")
        return sorted((await self.values(org_id, agent_id)).keys())

    async def values(self, org_id: str, agent_id: str) -> dict[str, str]:
        """An agent's variables, for its sandbox runs only."""
        if not agent_id:
            return {}
        return await self._db.read(EnvQueries.values, org_id, agent_id)
