"""MCP servers over real gRPC, against real MCP servers written with the SDK (stdio servers in the tool
sandbox, and streamable HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import mcp_pb2, mcp_pb2_grpc, tool_pb2, tool_pb2_grpc
from mnemo_core.actor import ADMIN, Actor, acting_as
from mnemo_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from mnemo_tools.app import build as build_tools
from mnemo_tools.mcp_addresses import REFUSED_URL
from mnemo_tools.settings import ToolsSettings
from tests.fakes.llm_provider import free_port
from tests.service.conftest import Served, clean_environment, new_actor, serving

if TYPE_CHECKING:
    from mnemo.tools.v1.mcp_pb2_grpc import McpServiceAsyncStub as Mcp
    from mnemo.tools.v1.tool_pb2_grpc import ToolServiceAsyncStub as Tools

FAKES = Path(__file__).parents[1] / "fakes"
SERVER_SCRIPT = str(FAKES / "mcp_server.py")
SERVER_TOOLS = ["add", "crash", "fail", "match", "read_env", "read_file", "shout", "slow"]


def mcp_settings(home: Path, **overrides: Any) -> ToolsSettings:
    """stdio servers on (this interpreter and what it imports visible in their sandbox), and the
    loopback network allowed for HTTP servers: the test servers listen there."""
    with clean_environment(home):
        return ToolsSettings(
            home=home,
            mcp_stdio_enabled=True,
            mcp_stdio_commands=[sys.executable, "true", "/nonexistent/mcp-server", "no-such-mcp-server"],
            mcp_stdio_paths=sorted({sys.prefix, sys.base_prefix, str(FAKES)}),
            mcp_http_allowed_networks=["127.0.0.0/8"],
            **overrides,
        )


@pytest.fixture(scope="module")
async def mcp_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    async with serving(await build_tools(mcp_settings(tmp_path_factory.mktemp("mcp")))) as served:
        yield served


@pytest.fixture
def mcp(mcp_service: Served) -> Mcp:
    return mcp_service.stub(mcp_pb2_grpc.McpServiceStub)


@pytest.fixture
def tools(mcp_service: Served) -> Tools:
    return mcp_service.stub(tool_pb2_grpc.ToolServiceStub)


@pytest.fixture
def actor() -> Actor:
    """An admin of an organization of its own: stdio servers are for admins."""
    member = new_actor()
    return Actor(member.org_id, "admin-1", ADMIN)


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """The test MCP server speaking streamable HTTP on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, SERVER_SCRIPT, "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except httpx.HTTPError:
                if process.poll() is not None:
                    raise RuntimeError("MCP test server exited") from None
                import time

                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def stdio_server(
    name: str = "local", prefix: str = "", env: dict[str, str] | None = None
) -> mcp_pb2.McpServer:
    return mcp_pb2.McpServer(
        name=name,
        tool_prefix=prefix,
        stdio=mcp_pb2.StdioTransport(command=sys.executable, args=[SERVER_SCRIPT], env=env or {}),
    )


async def run(tools: Tools, tool_id: str, args: object) -> tool_pb2.RunToolResponse:
    return await tools.RunTool(tool_pb2.RunToolRequest(tool_id=tool_id, arguments_json=json.dumps(args)))


async def test_registering_a_stdio_server_stores_its_tools_with_their_schemas(mcp: Mcp, actor: Actor) -> None:
    with acting_as(actor):
        created = await mcp.CreateMcpServer(
            mcp_pb2.CreateMcpServerRequest(server=stdio_server(env={"MNEMO_MCP_TOKEN": "t0ken"}))
        )

    server = created.server
    assert server.id.startswith("mcp-")
    assert server.tool_count == len(SERVER_TOOLS)
    assert server.stdio.command == sys.executable
    assert list(server.stdio.env_names) == ["MNEMO_MCP_TOKEN"]
    assert dict(server.stdio.env) == {}
    assert "t0ken" not in str(created)
    assert [t.name for t in created.tools] == SERVER_TOOLS
    add = created.tools[0]
    assert add.tool_type == tool_pb2.TOOL_TYPE_MCP
    assert add.mcp_server_id == server.id
    assert add.description == "Add two integers."
    schema = json.loads(add.json_schema)
    assert schema["properties"]["a"]["type"] == "integer"
    assert schema["required"] == ["a", "b"]


async def test_mcp_tools_run_through_run_tool(mcp: Mcp, tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        created = await mcp.CreateMcpServer(
            mcp_pb2.CreateMcpServerRequest(server=stdio_server(env={"MNEMO_MCP_TOKEN": "t0ken"}))
        )
        by_name = {t.name: t for t in created.tools}
        added = await run(tools, by_name["add"].id, {"a": 2, "b": 40})
        secret = await run(tools, by_name["read_env"].id, {"name": "MNEMO_MCP_TOKEN"})
        failed = await run(tools, by_name["fail"].id, {"message": "nope"})
        bad_args = await run(tools, by_name["add"].id, {"a": "two"})

    assert added.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS
    assert added.content == "42"
    assert secret.content == "t0ken"
    assert failed.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert failed.content.startswith("Error: ")
    assert bad_args.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert '"two" is not of type "integer"' in bad_args.content


async def test_a_server_that_dies_mid_call_is_a_tool_error_and_the_next_call_reconnects(
    mcp: Mcp, tools: Tools, actor: Actor
) -> None:
    with acting_as(actor):
        created = await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server()))
        by_name = {t.name: t for t in created.tools}
        crashed = await run(tools, by_name["crash"].id, {})
        after = await run(tools, by_name["shout"].id, {"text": "back"})

    assert crashed.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert crashed.content.startswith("Error: the MCP call failed") or "did not answer" in crashed.content
    assert after.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS
    assert after.content == "BACK"


async def test_http_server_tools_are_listed_and_called(
    mcp: Mcp, tools: Tools, actor: Actor, http_server: str
) -> None:
    with acting_as(actor):
        created = await mcp.CreateMcpServer(
            mcp_pb2.CreateMcpServerRequest(
                server=mcp_pb2.McpServer(
                    name="remote",
                    tool_prefix="remote_",
                    streamable_http=mcp_pb2.StreamableHttpTransport(
                        url=http_server, headers={"Authorization": "Bearer xyz"}
                    ),
                )
            )
        )
        by_name = {t.name: t for t in created.tools}
        result = await run(tools, by_name["remote_shout"].id, {"text": "hi"})
        listed = await mcp.ListMcpServers(mcp_pb2.ListMcpServersRequest())

    assert sorted(by_name) == [f"remote_{n}" for n in SERVER_TOOLS]
    assert by_name["remote_shout"].mcp_tool_name == "shout"
    assert list(created.server.streamable_http.header_names) == ["Authorization"]
    assert "xyz" not in str(created) + str(listed)
    assert result.content == "HI"
    assert [s.name for s in listed.servers] == ["remote"]


async def test_unreachable_server_is_unavailable_and_nothing_is_stored(mcp: Mcp, actor: Actor) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with acting_as(actor):
        with pytest.raises(Unavailable) as down:
            await mcp.CreateMcpServer(
                mcp_pb2.CreateMcpServerRequest(
                    server=mcp_pb2.McpServer(
                        name="down", streamable_http=mcp_pb2.StreamableHttpTransport(url=url)
                    )
                )
            )
        with pytest.raises(Unavailable) as exits:
            # It starts, but is no MCP server: it exits at once.
            await mcp.CreateMcpServer(
                mcp_pb2.CreateMcpServerRequest(
                    server=mcp_pb2.McpServer(name="exits", stdio=mcp_pb2.StdioTransport(command="true"))
                )
            )
        listed = await mcp.ListMcpServers(mcp_pb2.ListMcpServersRequest())

    assert down.value.reason == exits.value.reason == "MCP_SERVER_UNREACHABLE"
    # How it failed (connection refused, no MCP server) is logged, not told.
    assert down.value.message == exits.value.message == "cannot connect to the MCP server"
    assert list(listed.servers) == []


async def test_a_server_whose_tools_clash_needs_a_prefix(mcp: Mcp, actor: Actor) -> None:
    with acting_as(actor):
        await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server("first")))
        with pytest.raises(AlreadyExists) as clash:
            await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server("second")))
        prefixed = await mcp.CreateMcpServer(
            mcp_pb2.CreateMcpServerRequest(server=stdio_server("third", "b_"))
        )
        with pytest.raises(AlreadyExists):
            await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server("third", "c_")))

    assert clash.value.reason == "TOOL_NAME_TAKEN"
    assert "add" in clash.value.message
    assert prefixed.server.tool_count == len(SERVER_TOOLS)


@pytest.mark.parametrize(
    ("server", "field"),
    [
        (mcp_pb2.McpServer(name="x"), "server.transport"),
        (mcp_pb2.McpServer(name="", stdio=mcp_pb2.StdioTransport(command=sys.executable)), "server.name"),
        (mcp_pb2.McpServer(name="x", stdio=mcp_pb2.StdioTransport(command="")), "server.stdio.command"),
        (
            mcp_pb2.McpServer(name="x", streamable_http=mcp_pb2.StreamableHttpTransport(url="ftp://x")),
            "server.streamable_http.url",
        ),
        (
            mcp_pb2.McpServer(
                name="x", tool_prefix="bad prefix!", stdio=mcp_pb2.StdioTransport(command=sys.executable)
            ),
            "server.tool_prefix",
        ),
        (
            mcp_pb2.McpServer(name="x", stdio=mcp_pb2.StdioTransport(command="/nonexistent/mcp-server")),
            "server.stdio.command",
        ),
        (
            mcp_pb2.McpServer(name="x", stdio=mcp_pb2.StdioTransport(command="no-such-mcp-server")),
            "server.stdio.command",
        ),
        (
            mcp_pb2.McpServer(
                name="x", stdio=mcp_pb2.StdioTransport(command=sys.executable, cwd="/nonexistent")
            ),
            "server.stdio.cwd",
        ),
    ],
)
async def test_bad_registrations_are_invalid_argument(
    mcp: Mcp, actor: Actor, server: mcp_pb2.McpServer, field: str
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=server))

    assert refused.value.violations[0].field == field


async def test_refresh_keeps_tool_ids_and_delete_removes_server_and_tools(
    mcp: Mcp, tools: Tools, actor: Actor
) -> None:
    with acting_as(actor):
        created = await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server()))
        refreshed = await mcp.RefreshMcpServer(
            mcp_pb2.RefreshMcpServerRequest(mcp_server_id=created.server.id)
        )
        of_server = await tools.ListTools(tool_pb2.ListToolsRequest(mcp_server_id=created.server.id))
        await mcp.DeleteMcpServer(mcp_pb2.DeleteMcpServerRequest(mcp_server_id=created.server.id))
        with pytest.raises(NotFound):
            await mcp.GetMcpServer(mcp_pb2.GetMcpServerRequest(mcp_server_id=created.server.id))
        with pytest.raises(NotFound):
            await tools.GetTool(tool_pb2.GetToolRequest(tool_id=created.tools[0].id))
    with acting_as(new_actor()), pytest.raises(NotFound):
        await mcp.GetMcpServer(mcp_pb2.GetMcpServerRequest(mcp_server_id=created.server.id))

    assert [t.id for t in refreshed.tools] == [t.id for t in created.tools]
    assert refreshed.server.refresh_time.ToNanoseconds() >= created.server.refresh_time.ToNanoseconds()
    assert [t.id for t in of_server.tools] == [t.id for t in created.tools]


async def test_concurrent_calls_share_one_connection(mcp: Mcp, tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        created = await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server()))
        add = next(t for t in created.tools if t.name == "add")
        results = await asyncio.gather(*(run(tools, add.id, {"a": i, "b": i}) for i in range(8)))

    assert [r.content for r in results] == [str(2 * i) for i in range(8)]


async def test_a_stdio_server_runs_in_the_sandbox_with_its_registrations_environment_only(
    mcp: Mcp, tools: Tools, actor: Actor, mcp_service: Served
) -> None:
    home = Path(mcp_service.app.db.url.split("///", 1)[1]).parent.parent  # type: ignore[attr-defined]
    with acting_as(actor):
        created = await mcp.CreateMcpServer(
            mcp_pb2.CreateMcpServerRequest(server=stdio_server(env={"MNEMO_MCP_TOKEN": "t0ken"}))
        )
        by_name = {t.name: t for t in created.tools}
        seen = {
            name: (await run(tools, by_name["read_env"].id, {"name": name})).content
            for name in ("MNEMO_MCP_TOKEN", "MNEMO_HOME", "MNEMO_CONFIG", "HOME")
        }
        database = await run(tools, by_name["read_file"].id, {"path": str(home / "data" / "tools.db")})
        processes = await run(tools, by_name["read_file"].id, {"path": f"/proc/{os.getpid()}/environ"})

    assert seen == {
        "MNEMO_MCP_TOKEN": "t0ken",
        "MNEMO_HOME": "<unset>",
        "MNEMO_CONFIG": "<unset>",
        "HOME": "/tmp/work",
    }
    assert database.content == processes.content == "FileNotFoundError"


async def test_a_backtracking_pattern_in_a_servers_schema_is_checked_in_linear_time(
    mcp: Mcp, tools: Tools, actor: Actor
) -> None:
    with acting_as(actor):
        created = await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server()))
        match = next(t for t in created.tools if t.name == "match")
        # 40 characters: a backtracking engine would take days on this.
        hostile = await tools.RunTool(
            tool_pb2.RunToolRequest(tool_id=match.id, arguments_json=json.dumps({"text": "a" * 40 + "!"})),
            timeout=30,
        )
        fine = await run(tools, match.id, {"text": "a" * 40})

    assert json.loads(match.json_schema)["properties"]["text"]["pattern"] == "^(a+)+$"
    assert hostile.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert (
        hostile.content
        == f'Error: invalid arguments for \'match\': text: "{"a" * 40}!" does not match "^(a+)+$"'
    )
    assert fine.content == "matched"


async def test_a_server_whose_schemas_are_too_large_is_refused(tmp_path: Path, actor: Actor) -> None:
    async with serving(await build_tools(mcp_settings(tmp_path, tool_schema_max_bytes=60))) as served:
        mcp = served.stub(mcp_pb2_grpc.McpServiceStub)
        with acting_as(actor), pytest.raises(FailedPrecondition) as refused:
            await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=stdio_server()))
        with acting_as(actor):
            listed = await mcp.ListMcpServers(mcp_pb2.ListMcpServersRequest())

    assert refused.value.reason == "MCP_TOOL_SCHEMA_REFUSED"
    assert "at most 60 are accepted" in refused.value.message
    assert list(listed.servers) == []


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener that records whether anything connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/mcp",
        "http://localhost:{port}/mcp",
        "http://[::1]:{port}/mcp",
        "http://0.0.0.0:{port}/mcp",
        "http://2130706433:{port}/mcp",
        "http://[::ffff:127.0.0.1]:{port}/mcp",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/mcp",
        "http://10.0.0.1/mcp",
        "http://172.16.0.1/mcp",
        "http://192.168.0.1/mcp",
        "http://100.64.0.1/mcp",
        "http://224.0.0.1/mcp",
        "http://no-such-host.invalid/mcp",
        "file:///etc/passwd",
    ],
)
async def test_urls_of_the_services_own_network_are_refused_without_connecting(
    tools_service: Served, listener: socket.socket, url: str, actor: Actor
) -> None:
    mcp = tools_service.stub(mcp_pb2_grpc.McpServiceStub)
    target = url.format(port=listener.getsockname()[1])
    server = mcp_pb2.McpServer(name="probe", streamable_http=mcp_pb2.StreamableHttpTransport(url=target))
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=server))

    assert refused.value.reason == "MCP_URL_NOT_ALLOWED"
    assert refused.value.violations[0].field == "server.streamable_http.url"
    assert refused.value.violations[0].description == REFUSED_URL
    with pytest.raises(BlockingIOError):
        listener.accept()


async def test_connection_failures_are_told_in_one_generic_message(
    mcp: Mcp, actor: Actor, listener: socket.socket
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    silent = f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"

    async def hang_up() -> None:
        # Whatever connects gets its connection closed unanswered.
        loop = asyncio.get_running_loop()
        while True:
            connection, _ = await loop.sock_accept(listener)
            connection.close()

    hanging_up = asyncio.ensure_future(hang_up())
    messages = []
    try:
        with acting_as(actor):
            for name, url in (("closed", closed), ("silent", silent)):
                server = mcp_pb2.McpServer(
                    name=name, streamable_http=mcp_pb2.StreamableHttpTransport(url=url)
                )
                with pytest.raises(Unavailable) as failed:
                    await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=server))
                messages.append(failed.value.message)
    finally:
        hanging_up.cancel()

    assert messages == ["cannot connect to the MCP server"] * 2


async def test_a_response_beyond_the_cap_ends_the_connection(tmp_path: Path, actor: Actor) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b" " * (1 << 20)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
        writer.write(b"content-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    flooder = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = flooder.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with serving(
            await build_tools(mcp_settings(tmp_path, mcp_max_response_bytes=64 << 10))
        ) as served:
            mcp = served.stub(mcp_pb2_grpc.McpServiceStub)
            server = mcp_pb2.McpServer(name="flood", streamable_http=mcp_pb2.StreamableHttpTransport(url=url))
            with acting_as(actor), pytest.raises(Unavailable) as failed:
                await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=server))
    finally:
        flooder.close()

    assert failed.value.message == "cannot connect to the MCP server"


async def test_an_organization_beyond_its_mcp_server_cap_is_refused_and_others_are_not(
    tmp_path: Path, actor: Actor, http_server: str
) -> None:
    def over_http(name: str) -> mcp_pb2.McpServer:
        return mcp_pb2.McpServer(
            name=name, tool_prefix=name, streamable_http=mcp_pb2.StreamableHttpTransport(url=http_server)
        )

    async with serving(await build_tools(mcp_settings(tmp_path, mcp_max_servers_per_org=2))) as served:
        mcp = served.stub(mcp_pb2_grpc.McpServiceStub)
        with acting_as(actor):
            await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=over_http("one")))
            second = await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=over_http("two")))
            with pytest.raises(ResourceExhausted) as refused:
                await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=over_http("three")))
            listed = await mcp.ListMcpServers(mcp_pb2.ListMcpServersRequest())
        other = new_actor()
        with acting_as(Actor(other.org_id, "admin-2", ADMIN)):
            await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=over_http("one")))
        with acting_as(actor):
            await mcp.DeleteMcpServer(mcp_pb2.DeleteMcpServerRequest(mcp_server_id=second.server.id))
            await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=over_http("three")))

    assert refused.value.reason == "MCP_SERVERS_EXHAUSTED"
    assert refused.value.metadata == {"max_servers": "2"}
    assert sorted(s.name for s in listed.servers) == ["one", "two"]
