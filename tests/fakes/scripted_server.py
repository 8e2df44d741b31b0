"""A real HTTP server in a background thread whose replies tests script: the base of the provider fakes.

Each fake speaks one provider's wire format; this part holds what they share: the queue of scripted
replies, the recorded requests (bodies and headers), a count of streams the client abandoned, and the
uvicorn thread. Test fixtures only: never runtime defaults.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request

from tests.fakes.background import BackgroundServer, free_port


class ScriptState:
    """Scripted replies, recorded requests and stream outcomes, shared with the server thread."""

    def __init__(self) -> None:
        self.script: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        # Streams the client closed before the fake had sent everything.
        self.abandoned_streams = 0
        self.finished_streams = 0
        # Provider batches by id (for fakes of batch APIs), and retrieves before a batch completes.
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_polls = 1

    def record(self, request: Request, body: Any) -> None:
        """Records a request to a route that is not scripted."""
        with self.lock:
            self.requests.append({"path": request.url.path, "body": body, "headers": dict(request.headers)})

    async def take(self, request: Request, body: Any) -> dict[str, Any] | None:
        """Records the request and returns the next scripted reply (None: the default one)."""
        self.record(request, body)
        with self.lock:
            return self.script.popleft() if self.script else None

    def stream_ended(self, *, finished: bool) -> None:
        with self.lock:
            if finished:
                self.finished_streams += 1
            else:
                self.abandoned_streams += 1


class ScriptedServer:
    """Runs a fake's Starlette app on a free loopback port in a background thread."""

    def __init__(self, build: Callable[[ScriptState], Starlette], port: int = 0) -> None:
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.state = ScriptState()
        self._http = BackgroundServer(build(self.state), self.port)

    def start(self) -> ScriptedServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def script(self, *responses: dict[str, Any]) -> None:
        """Queues replies; each request to a scripted route takes the next one."""
        with self.state.lock:
            self.state.script.extend(responses)

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """The requests received (path, JSON body, headers), oldest first; only `path`'s when given."""
        with self.state.lock:
            return [dict(r) for r in self.state.requests if path is None or r["path"] == path]

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies of the requests to `path`, oldest first."""
        return [r["body"] for r in self.requests(path)]

    def reset(self) -> None:
        """Forgets the script, the recorded requests and the stream counts."""
        with self.state.lock:
            self.state.script.clear()
            self.state.requests.clear()
            self.state.abandoned_streams = 0
            self.state.finished_streams = 0
            self.state.batches.clear()
            self.state.batch_polls = 1

    def complete_batches_after(self, polls: int) -> None:
        """Batches created from now on complete at their `polls`+1-th retrieve."""
        with self.state.lock:
            self.state.batch_polls = polls

    def wait_for_abandoned_stream(self, timeout: float = 5.0) -> bool:
        """Whether a stream gets abandoned by its client within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.state.lock:
                if self.state.abandoned_streams:
                    return True
            time.sleep(0.01)
        return False
