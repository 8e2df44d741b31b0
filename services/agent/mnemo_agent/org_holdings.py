"""What an organization still owns in the other services (blocks and sources in memory, custom tools and
MCP servers in tools), asked before the organization is deleted: each service owns its rows, so the
agent service asks rather than deletes them behind their backs."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from mnemo.memory.v1 import block_pb2, source_pb2
from mnemo.tools.v1 import mcp_pb2, tool_pb2
from mnemo_agent.mesh import Mesh
from mnemo_core.actor import ROOT, Actor, acting_as, remaining_time

# Who the question is asked as: root, acting inside the organization being deleted.
ASKER = "organization-deletion"
DEFAULT_TIMEOUT = 30.0


class OrgHoldings(Protocol):
    async def remaining(self, org_id: str) -> list[str]:
        """The kinds of resources the organization still owns elsewhere (empty: nothing)."""
        ...


class MeshHoldings:
    """Asks memory and tools, with one listing of at most one item per kind."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    async def remaining(self, org_id: str) -> list[str]:
        left = remaining_time()
        deadline = time.monotonic() + (DEFAULT_TIMEOUT if left is None else left)
        with acting_as(Actor(org_id=org_id, user_id=ASKER, role=ROOT), deadline=deadline):
            blocks, sources, tools, servers = await asyncio.gather(
                self._mesh.blocks.ListBlocks(block_pb2.ListBlocksRequest(page_size=1)),
                self._mesh.sources.ListSources(source_pb2.ListSourcesRequest(page_size=1)),
                self._mesh.tools.ListTools(
                    tool_pb2.ListToolsRequest(tool_type=tool_pb2.TOOL_TYPE_CUSTOM, page_size=1)
                ),
                self._mesh.mcp.ListMcpServers(mcp_pb2.ListMcpServersRequest(page_size=1)),
            )
        owned = {
            "blocks": bool(blocks.blocks),
            "sources": bool(sources.sources),
            "tools": bool(tools.tools),
            "mcp_servers": bool(servers.servers),
        }
        return [kind for kind, has in owned.items() if has]
