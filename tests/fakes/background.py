"""An ASGI app served on a free loopback port from a daemon thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

# Seconds an idle client connection stays open. Real providers keep connections for minutes; uvicorn's
# default of 5 s makes a pooled connection race its own close when tests run with retries off.
KEEP_ALIVE = 600


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BackgroundServer:
    """Serves `app` with uvicorn in a daemon thread; `start` returns once it accepts connections."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_keep_alive=KEEP_ALIVE
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
