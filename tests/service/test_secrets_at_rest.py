"""Tool environment values and MCP server env/headers are sealed in the database, the data directory and
files are the service user's alone, and a key rotation seals every value again."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mnemo.tools.v1 import mcp_pb2, mcp_pb2_grpc, tool_pb2, tool_pb2_grpc
from mnemo_core.actor import ADMIN, Actor, acting_as
from mnemo_core.errors import Internal
from mnemo_core.sealing import KEY_FILE, Sealer
from mnemo_tools.app import build as build_tools
from tests.service.conftest import new_actor, serving
from tests.service.test_mcp_servers import mcp_settings, stdio_server

ENV_SECRET = "env-s3cret-value"
MCP_SECRET = "mcp-t0ken-value"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _stored(home: Path) -> tuple[list[str], list[str]]:
    """The raw stored tool environment values and MCP secrets."""
    with sqlite3.connect(home / "data" / "tools.db") as db:
        values = [row[0] for row in db.execute("SELECT value FROM tool_env")]
        secrets = [row[0] for row in db.execute("SELECT secrets FROM mcp_servers")]
    return values, secrets


async def _populate(home: Path) -> Actor:
    member = new_actor()
    admin = Actor(member.org_id, "admin-1", ADMIN)
    async with serving(await build_tools(mcp_settings(home))) as served:
        tools = served.stub(tool_pb2_grpc.ToolServiceStub)
        mcp = served.stub(mcp_pb2_grpc.McpServiceStub)
        with acting_as(admin):
            await tools.UpdateToolEnvironment(
                tool_pb2.UpdateToolEnvironmentRequest(agent_id="agent-1", set={"API_KEY": ENV_SECRET})
            )
            await mcp.CreateMcpServer(
                mcp_pb2.CreateMcpServerRequest(server=stdio_server(env={"MNEMO_MCP_TOKEN": MCP_SECRET}))
            )
    return admin


async def test_secrets_are_sealed_in_the_database_and_data_files_are_private(tmp_path: Path) -> None:
    await _populate(tmp_path)

    values, secrets = _stored(tmp_path)
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    key = (tmp_path / KEY_FILE).read_text().strip()
    assert ENV_SECRET.encode() not in raw
    assert MCP_SECRET.encode() not in raw
    assert [Sealer([key]).open(v) for v in values] == [ENV_SECRET]
    assert all(v.startswith("fernet:") for v in values)
    assert MCP_SECRET in Sealer([key]).open(secrets[0].split('"')[3])
    assert _mode(tmp_path / KEY_FILE) == 0o600
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / "tools.db") == 0o600


async def test_a_rotated_key_seals_every_value_again_and_the_old_key_can_be_dropped(tmp_path: Path) -> None:
    await _populate(tmp_path)
    old = (tmp_path / KEY_FILE).read_text().strip()
    new = Fernet.generate_key().decode()

    async with serving(await build_tools(mcp_settings(tmp_path, secrets_key=f"{new},{old}"))):
        pass
    values, secrets = _stored(tmp_path)
    # Starting with the new key alone opens (and seals again) every stored value, or fails.
    async with serving(await build_tools(mcp_settings(tmp_path, secrets_key=new))):
        pass

    assert [Sealer([new]).open(v) for v in values] == [ENV_SECRET]
    assert MCP_SECRET in Sealer([new]).open(secrets[0].split('"')[3])
    with pytest.raises(Internal):
        Sealer([old]).open(values[0])


def test_a_value_written_before_sealing_is_read_as_it_is() -> None:
    assert Sealer([Fernet.generate_key().decode()]).open("plain old value") == "plain old value"
