"""Environment variables of an agent's custom tools (API keys and other secrets).

Values are stored by the tools service and handed only to the sandbox of runs that may have them: runs
of a tool attached to the agent, started by one of the agent's own turns or by an admin. Every other
run, a member's direct run naming the agent included, gets none. No API returns them, only their names.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from sqlalchemy import Connection

from mnemo_core.actor import Actor, require_admin
from mnemo_core.db import Database
from mnemo_core.ids import require_id
from mnemo_core.validation import invalid
from mnemo_core.wire import utcnow
from mnemo_tools.store import EnvQueries

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_VARIABLES = 100
MAX_VALUE_CHARS = 32_768


class Agents(Protocol):
    """What the agent service says about an agent (agent_directory.py)."""

    async def tool_attached(self, agent_id: str, tool_id: str) -> bool: ...

    async def current_turn(self, agent_id: str, run_id: str) -> bool: ...


class AgentEnvironments:
    """Reads and writes the variables of one organization's agents."""

    def __init__(self, db: Database, agents: Agents) -> None:
        self._db = db
        self._agents = agents

    async def update(
        self, actor: Actor, agent_id: str, set_: Mapping[str, str], unset: Sequence[str]
    ) -> list[str]:
        """Sets and removes variables; returns the names after the change.

        Setting needs an admin (the values are the organization's secrets); removing does not, so that a
        member who may delete an agent may also delete what the agent's tools were given.
        """
        if set_:
            require_admin(actor, "set tool environment variables")
        org_id = actor.org_id
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

    async def for_run(self, actor: Actor, agent_id: str, tool_id: str, run_id: str) -> dict[str, str]:
        """The variables a run of `tool_id` on behalf of `agent_id` gets: the agent's, if the tool is
        attached to it and the run is the agent's own turn (`run_id`) or an admin's; else none."""
        if not agent_id or not (actor.is_admin or run_id):
            return {}
        values = await self.values(actor.org_id, agent_id)
        if not values:
            return {}
        checks = [self._agents.tool_attached(agent_id, tool_id)]
        if not actor.is_admin:
            checks.append(self._agents.current_turn(agent_id, run_id))
        return values if all(await asyncio.gather(*checks)) else {}

    async def values(self, org_id: str, agent_id: str) -> dict[str, str]:
        """An agent's variables, for its sandbox runs only."""
        if not agent_id:
            return {}
        return await self._db.read(EnvQueries.values, org_id, agent_id)
