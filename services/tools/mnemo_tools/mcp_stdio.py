"""The stdio transport of an MCP server that runs in the tool sandbox.

The SDK's own stdio client starts the command as a child of the tools service; here the fork server
starts it in the sandbox (its own namespaces, minimal root, no capabilities, seccomp, the registration's
environment only) and this transport speaks newline-delimited JSON-RPC over the pipes it was given. The
server's stderr goes to a log file, capped.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mnemo_core.errors import PermissionDenied
from mnemo_tools.sandbox.forkserver import SYSTEM_DIRS, WORKDIR
from mnemo_tools.sandbox.runner import SandboxCommand, SandboxProcess

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams
    from mcp.shared.message import SessionMessage

log = logging.getLogger(__name__)

# Bytes of stderr kept in a server's log file per connection.
MAX_LOG_BYTES = 1 << 20


# PATH of a server whose registration sets none.
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class StdioPolicy:
    """What the operator allows of stdio MCP servers."""

    enabled: bool
    commands: tuple[str, ...]
    paths: tuple[str, ...]
    network: bool

    def refusal(self, command: str) -> PermissionDenied | None:
        """Why a server with this command may not be registered or started (None: it may)."""
        if not self.enabled:
            return PermissionDenied(
                "this server does not run stdio MCP servers (mcp_stdio_enabled is off)",
                reason="MCP_STDIO_DISABLED",
            )
        if command not in self.commands:
            allowed = ", ".join(self.commands) or "none"
            return PermissionDenied(
                f"'{command}' is not one of the commands the operator allows for stdio MCP servers "
                f"(mcp_stdio_commands: {allowed})",
                reason="MCP_STDIO_COMMAND_NOT_ALLOWED",
            )
        return None

    def visible(self, path: str) -> bool:
        """Whether a host path is inside the sandbox of a stdio server (read-only)."""
        roots = (*SYSTEM_DIRS, *self.paths)
        return all(
            any(seen == root or seen.startswith(root.rstrip("/") + "/") for root in roots)
            for seen in (os.path.abspath(path), os.path.realpath(path))
        )

    def executable(self, command: str, env_path: str | None) -> bool:
        """Whether the sandbox can start `command`: found on its PATH, or a visible executable file."""
        found = shutil.which(command, path=env_path or SANDBOX_PATH) if "/" not in command else command
        return (
            found is not None and os.path.isabs(found) and self.visible(found) and os.access(found, os.X_OK)
        )

    def command_of(
        self, command: str, args: tuple[str, ...], env: dict[str, str], cwd: str
    ) -> SandboxCommand:
        """The sandbox job of a server: only its registration's environment (and a PATH)."""
        return SandboxCommand(
            argv=(command, *args),
            env={"PATH": SANDBOX_PATH, "HOME": WORKDIR, **env},
            readonly_paths=self.paths,
            cwd=cwd,
            network=self.network,
        )


class MessageTooLarge(Exception):
    """The server wrote a line longer than the response cap."""


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await anyio.wait_writable(fd)
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


async def _read_some(fd: int) -> bytes:
    while True:
        await anyio.wait_readable(fd)
        try:
            return os.read(fd, 256 * 1024)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return b""
            raise


@contextlib.asynccontextmanager
async def sandboxed_stdio(
    process: SandboxProcess, log_file: Path, max_message_bytes: int
) -> AsyncIterator[TransportStreams]:
    """Streams of an MCP session over a sandboxed server's stdin and stdout; stops the server at the end."""
    import mcp_types
    from mcp.shared.message import SessionMessage

    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def from_server() -> None:
        buffer = b""
        async with read_writer:
            while chunk := await _read_some(process.stdout):
                lines = (buffer + chunk).split(b"\n")
                buffer = lines.pop()
                if len(buffer) > max_message_bytes:
                    await read_writer.send(
                        MessageTooLarge(f"a message longer than {max_message_bytes} bytes")
                    )
                    return
                for line in lines:
                    try:
                        message: SessionMessage | Exception = SessionMessage(
                            mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                        )
                    except ValueError as exc:
                        message = exc
                    await read_writer.send(message)

    async def to_server() -> None:
        async with write_reader:
            async for message in write_reader:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                try:
                    await _write_all(process.stdin, data.encode())
                except OSError:
                    await read_writer.aclose()  # the server is gone: end the session
                    return

    async def stderr_to_log() -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with log_file.open("ab") as out:
            while chunk := await _read_some(process.stderr):
                if written < MAX_LOG_BYTES:
                    out.write(chunk[: MAX_LOG_BYTES - written])
                    out.flush()
                written += len(chunk)

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(from_server)
            tasks.start_soon(to_server)
            tasks.start_soon(stderr_to_log)
            try:
                yield read_stream, write_stream
            finally:
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await process.stop()
            for stream in (read_stream, write_stream, read_writer, write_reader):
                await stream.aclose()
