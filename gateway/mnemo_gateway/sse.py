"""Server-Sent Events of streamed turns and group runs: one `data: <JSON>` per event, `[DONE]` last."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from mnemo.rest.common import ErrorBody
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import MnemoError
from mnemo_gateway.backends import Backends
from mnemo_gateway.errors import error_body, http_status, retry_after


def sse(payload: Any) -> str:
    """One event: a REST model (or ready JSON text) as a `data:` line."""
    text = payload.model_dump_json() if hasattr(payload, "model_dump_json") else payload
    return f"data: {text}\n\n"


async def event_stream(
    call: Any, actor: Actor, mesh: Backends, lines: Callable[[Any], list[str]]
) -> StreamingResponse:
    """Streams a server-streaming mesh call as Server-Sent Events, `lines` making each event's.

    The first event (the run's id) is awaited here, so that a refused turn is a plain HTTP error; a failure
    after that is an error event, with `retry_after` when retrying the same request can succeed (a service
    of the mesh went away mid-stream). A client that disconnects closes the call, which cancels the work.
    """
    events = call.__aiter__()
    first = await events.__anext__()

    async def body() -> AsyncIterator[str]:
        with acting_as(actor, deadline=time.monotonic() + mesh.request_timeout):
            try:
                for line in lines(first):
                    yield line
                async for event in events:
                    for line in lines(event):
                        yield line
            except MnemoError as exc:
                wait = retry_after(exc, http_status(exc))
                event = ErrorBody.model_validate(error_body(exc))
                event.retry_after = None if wait is None else int(wait)
                yield sse(event)
            finally:
                await events.aclose()
            yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
