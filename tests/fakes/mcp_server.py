"""A real MCP server built with the official SDK, for tests: stdio or streamable HTTP.

Run: `python tests/fakes/mcp_server.py stdio` or `python tests/fakes/mcp_server.py http PORT`.
A test fixture only.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

server = MCPServer("mnemo-test-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper()


@server.tool()
def read_env(name: str) -> str:
    """Return an environment variable of the server process (or '<unset>')."""
    return os.environ.get(name, "<unset>")


@server.tool()
def read_file(path: str) -> str:
    """Return the start of a file, or the name of the error reading it."""
    try:
        with open(path, "rb") as f:
            return f.read(64).decode("latin-1")
    except OSError as exc:
        return type(exc).__name__


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message."""
    raise ValueError(message)


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "done"


@server.tool()
def match(text: Annotated[str, Field(pattern="^(a+)+$")]) -> str:
    """Accept a run of a's (the pattern backtracks catastrophically in engines that backtrack)."""
    return "matched"


@server.tool()
def crash() -> str:
    """Kill the server process without answering."""
    os._exit(7)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
