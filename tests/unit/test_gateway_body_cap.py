"""The REST body cap: refused with 413 while the body arrives, never read whole."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from mnemo_gateway.app import create_app
from mnemo_gateway.settings import GatewaySettings
from tests.fakes.background import BackgroundServer

KEY = "test-key-0123456789"
CAP = 1024 * 1024
CHUNK = 64 * 1024
# What the client would send if nobody stopped it: 200 times the cap.
WHOLE = 200 * CAP


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[BackgroundServer]:
    settings = GatewaySettings(
        home=tmp_path, api_key=SecretStr(KEY), max_request_body_bytes=CAP, agent_port=1, memory_port=1
    )
    server = BackgroundServer(create_app(settings))
    server.start()
    yield server
    server.stop()


async def _post(port: int, headers: dict[str, str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /v1/agents HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\n{head}\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return status, json.loads(await reader.readexactly(length))


async def test_a_declared_oversized_body_is_refused_before_any_of_it_is_sent(
    gateway: BackgroundServer,
) -> None:
    reader, writer = await _post(gateway.port, {"Content-Length": str(WHOLE)})
    status, body = await asyncio.wait_for(_response(reader), 10)
    writer.close()
    assert status == 413
    assert body["reason"] == "REQUEST_BODY_TOO_LARGE"
    assert body["metadata"] == {"max_bytes": str(CAP)}


async def test_a_streamed_body_is_refused_once_it_passes_the_cap_not_after_it_is_read_whole(
    gateway: BackgroundServer,
) -> None:
    reader, writer = await _post(gateway.port, {"Transfer-Encoding": "chunked"})
    answer = asyncio.create_task(_response(reader))
    sent = 0
    chunk = b"[" + b" " * (CHUNK - 1)
    while sent < WHOLE and not answer.done():
        try:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        except ConnectionError:
            break
        sent += len(chunk)
        chunk = b" " * CHUNK
        await asyncio.sleep(0.005)
    status, body = await asyncio.wait_for(answer, 10)
    writer.close()
    assert status == 413
    assert body["reason"] == "REQUEST_BODY_TOO_LARGE"
    # Refused past the cap but far from the whole body (what was in flight in socket buffers aside).
    assert CAP < sent < 16 * CAP
