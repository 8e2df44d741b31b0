"""Requests described once (`Call`, `EventCall`) and run by a sync or an async transport.

A resource method is written once, as a function building a `Call`; the `endpoint` and `streaming`
descriptors run it with the resource's transport, so `Mnemo` returns results and `AsyncMnemo` awaitables.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import httpx
import tenacity
from pydantic import TypeAdapter

from mnemo.client.errors import RateLimited, Unavailable, error_from_body, error_from_response
from mnemo.client.models import Page, StreamEvent

T = TypeVar("T")
P = ParamSpec("P")

# 503 reasons that waiting does not cure.
PERMANENT_REASONS = frozenset({"LLM_PROVIDER_NOT_CONFIGURED"})
_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


@dataclass(frozen=True)
class Poll(Generic[T]):
    """Repeat a call every `interval` seconds until `done(result)`; TimeoutError after `timeout`."""

    done: Callable[[T], bool]
    interval: float = 0.5
    timeout: float | None = None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    # A body sent in pieces (an upload that reports progress); `headers` then carry its Content-Type.
    content: Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Safe to send again (reads, deletes, turns with an idempotency key): retried on 429/503.
    retry: bool = False
    # The Idempotency-Key sent when neither the call's headers nor the client's options name one: made
    # once per call, so that every retry of it carries the same key.
    default_idempotency_key: str | None = None
    poll: Poll[T] | None = None


@dataclass(frozen=True)
class EventCall:
    """A POST answered with Server-Sent Events."""

    path: str
    json: Any
    headers: dict[str, str] = field(default_factory=dict)


def parse_as(adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    """Reads the body as the adapter's type."""
    return lambda response: adapter.validate_json(response.content)


def parse_page(adapter: TypeAdapter[list[T]]) -> Callable[[httpx.Response], Page[T]]:
    """Reads a list body and its `X-Next-Page-Token` header."""
    return lambda response: Page(
        adapter.validate_json(response.content), response.headers.get("X-Next-Page-Token") or None
    )


def parse_nothing(response: httpx.Response) -> None:
    """For 204 answers."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RateLimited | Unavailable):
        return exc.reason not in PERMANENT_REASONS
    return isinstance(exc, httpx.ConnectError)


def _wait(state: tenacity.RetryCallState) -> float:
    """The server's Retry-After when it sent one (at most a minute), else exponential backoff."""
    exc = state.outcome.exception() if state.outcome else None
    hinted = exc.retry_after if isinstance(exc, RateLimited | Unavailable) else None
    if hinted is not None:
        return min(hinted, 60.0)
    return min(8.0, 0.5 * 2.0 ** (state.attempt_number - 1))


def _retry_policy(max_retries: int) -> dict[str, Any]:
    return {
        "retry": tenacity.retry_if_exception(_retryable),
        "stop": tenacity.stop_after_attempt(max_retries + 1),
        "wait": _wait,
        "reraise": True,
    }


@dataclass(frozen=True)
class RequestOptions:
    """Options of the requests a client (or a `with_options` copy of it) sends."""

    # Seconds; None: the client's timeout.
    timeout: float | None = None
    max_retries: int = 2
    # Sent as the `Idempotency-Key` header; a turn method's own `idempotency_key=` argument wins.
    idempotency_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def merged(self, **changes: Any) -> RequestOptions:
        """A copy with the given options changed (None leaves one as it is)."""
        kept = {k: v for k, v in changes.items() if v is not None}
        if "headers" in kept:
            kept["headers"] = {**self.headers, **kept["headers"]}
        return replace(self, **kept)


@dataclass(frozen=True)
class RawResponse(Generic[T]):
    """An answer with its HTTP response: status, headers (e.g. `X-Next-Page-Token`, `Retry-After`)."""

    http_response: httpx.Response
    parsed: T

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        return self.http_response.status_code

    @property
    def headers(self) -> httpx.Headers:
        """The response headers."""
        return self.http_response.headers


def _read(call: Call[T], response: httpx.Response) -> T:
    if response.is_error:
        raise error_from_response(response)
    return call.parse(response)


def _request_args(call: Call[Any], options: RequestOptions) -> dict[str, Any]:
    headers = dict(options.headers)
    if options.idempotency_key or call.default_idempotency_key:
        headers["Idempotency-Key"] = options.idempotency_key or call.default_idempotency_key or ""
    headers.update(call.headers)
    args: dict[str, Any] = {"params": call.params, "headers": headers}
    if call.content is not None:
        args["content"] = call.content()
    else:
        args["json"] = call.json
        args["files"] = call.files
    if options.timeout is not None:
        args["timeout"] = options.timeout
    return args


def _parsed(result: Any) -> Any:
    return result.parsed if isinstance(result, RawResponse) else result


def _next_page_call(call: Call[T], token: str) -> Call[T]:
    return replace(call, params={**(call.params or {}), "page_token": token}, poll=None)


def _stream_args(call: EventCall, options: RequestOptions) -> dict[str, Any]:
    headers = dict(options.headers)
    if options.idempotency_key:
        headers["Idempotency-Key"] = options.idempotency_key
    args: dict[str, Any] = {"headers": headers | call.headers}
    if options.timeout is not None:
        args["timeout"] = options.timeout
    return args


class _SseDecoder:
    """Server-Sent Events lines -> event data (only `data:` fields matter here)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """The data of the event this line completes, if it does."""
        if line:
            if line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
            return None
        data, self._data = "\n".join(self._data), []
        return data or None


def _event(data: str) -> StreamEvent:
    body = json.loads(data)
    if isinstance(body, dict) and "message_type" not in body and "detail" in body:
        raise error_from_body(body, status=None)  # the turn failed after the stream began
    return _EVENT.validate_python(body)


class SyncTransport:
    """Runs calls with an `httpx.Client`."""

    def __init__(self, client: httpx.Client, options: RequestOptions) -> None:
        self.client = client
        self.options = options

    def execute(self, call: Call[T]) -> T:
        result = self._poll(call)
        page = _parsed(result)
        if isinstance(page, Page):
            plain = SyncTransport(self.client, self.options)
            page.bind(lambda token: plain.execute(_next_page_call(call, token)))
        return result

    def _poll(self, call: Call[T]) -> T:
        result = self._once(call)
        if call.poll is None:
            return result
        deadline = None if call.poll.timeout is None else time.monotonic() + call.poll.timeout
        while not call.poll.done(_parsed(result)):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{call.method} {call.path}: not done after {call.poll.timeout} s")
            time.sleep(call.poll.interval)
            result = self._once(call)
        return result

    def _once(self, call: Call[T]) -> T:
        if not call.retry:
            return self._send(call)
        result: T = tenacity.Retrying(**_retry_policy(self.options.max_retries))(self._send, call)
        return result

    def _send(self, call: Call[T]) -> T:
        return _read(call, self._response(call))

    def _response(self, call: Call[Any]) -> httpx.Response:
        return self.client.request(call.method, call.path, **_request_args(call, self.options))


class RawSyncTransport(SyncTransport):
    """Like `SyncTransport`, but each call answers a `RawResponse` holding the HTTP response too."""

    def _send(self, call: Call[T]) -> T:
        response = self._response(call)
        return RawResponse(response, _read(call, response))  # type: ignore[return-value]


class AsyncTransport:
    """Runs calls with an `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient, options: RequestOptions) -> None:
        self.client = client
        self.options = options

    async def execute(self, call: Call[T]) -> T:
        result = await self._poll(call)
        page = _parsed(result)
        if isinstance(page, Page):
            plain = AsyncTransport(self.client, self.options)
            page.bind(lambda token: plain.execute(_next_page_call(call, token)))
        return result

    async def _poll(self, call: Call[T]) -> T:
        result = await self._once(call)
        if call.poll is None:
            return result
        deadline = None if call.poll.timeout is None else time.monotonic() + call.poll.timeout
        while not call.poll.done(_parsed(result)):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{call.method} {call.path}: not done after {call.poll.timeout} s")
            await asyncio.sleep(call.poll.interval)
            result = await self._once(call)
        return result

    async def _once(self, call: Call[T]) -> T:
        if not call.retry:
            return await self._send(call)
        result: T = await tenacity.AsyncRetrying(**_retry_policy(self.options.max_retries))(self._send, call)
        return result

    async def _send(self, call: Call[T]) -> T:
        return _read(call, await self._response(call))

    async def _response(self, call: Call[Any]) -> httpx.Response:
        args = _request_args(call, self.options)
        if call.content is not None:
            args["content"] = _aiter(args["content"])
        return await self.client.request(call.method, call.path, **args)


class RawAsyncTransport(AsyncTransport):
    """Like `AsyncTransport`, but each call answers a `RawResponse` holding the HTTP response too."""

    async def _send(self, call: Call[T]) -> T:
        response = await self._response(call)
        return RawResponse(response, _read(call, response))  # type: ignore[return-value]


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # The pieces are slices of bytes already read: handing them over does not block.
    for chunk in chunks:
        yield chunk


class EventStream:
    """The events of a streamed turn; iterate it, inside `with` to close the connection early.

    Opened on `with` or on the first event: a refused turn (unknown agent, bad input) raises then.
    """

    def __init__(self, client: httpx.Client, call: EventCall, options: RequestOptions | None = None) -> None:
        self._client = client
        self._call = call
        self._options = options or RequestOptions()
        self._response: httpx.Response | None = None
        self._events: Iterator[StreamEvent] | None = None

    def _open(self) -> Iterator[StreamEvent]:
        if self._events is None:
            request = self._client.build_request(
                "POST", self._call.path, json=self._call.json, **_stream_args(self._call, self._options)
            )
            response = self._client.send(request, stream=True)
            if response.is_error:
                response.read()
                response.close()
                raise error_from_response(response)
            self._response = response
            self._events = self._decode(response.iter_lines())
        return self._events

    @staticmethod
    def _decode(lines: Iterator[str]) -> Iterator[StreamEvent]:
        decoder = _SseDecoder()
        for line in lines:
            data = decoder.feed(line)
            if data == "[DONE]":
                return
            if data is not None:
                yield _event(data)

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        try:
            return next(self._open())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Closes the connection (the server cancels an unfinished turn)."""
        if self._response is not None:
            self._response.close()

    def __enter__(self) -> EventStream:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventStream:
    """The events of a streamed turn, for `async for` (inside `async with` to close early)."""

    def __init__(
        self, client: httpx.AsyncClient, call: EventCall, options: RequestOptions | None = None
    ) -> None:
        self._client = client
        self._call = call
        self._options = options or RequestOptions()
        self._response: httpx.Response | None = None
        self._events: AsyncIterator[StreamEvent] | None = None

    async def _open(self) -> AsyncIterator[StreamEvent]:
        if self._events is None:
            request = self._client.build_request(
                "POST", self._call.path, json=self._call.json, **_stream_args(self._call, self._options)
            )
            response = await self._client.send(request, stream=True)
            if response.is_error:
                await response.aread()
                await response.aclose()
                raise error_from_response(response)
            self._response = response
            self._events = self._decode(response.aiter_lines())
        return self._events

    @staticmethod
    async def _decode(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
        decoder = _SseDecoder()
        async for line in lines:
            data = decoder.feed(line)
            if data == "[DONE]":
                return
            if data is not None:
                yield _event(data)

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            return await anext(await self._open())
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Closes the connection (the server cancels an unfinished turn)."""
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


TransportT = TypeVar("TransportT", SyncTransport, AsyncTransport, RawSyncTransport, RawAsyncTransport)


class Resource(Generic[TransportT]):
    """A group of endpoints bound to one transport."""

    def __init__(self, transport: TransportT) -> None:
        self._transport: TransportT = transport


class endpoint(Generic[P, T]):
    """Turns a method building a `Call[T]` into one returning T (sync) or an awaitable T (async)."""

    def __init__(self, build: Callable[Concatenate[Any, P], Call[T]]) -> None:
        self._build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> endpoint[P, T]: ...
    @overload
    def __get__(self, obj: Resource[RawSyncTransport], owner: type[Any]) -> Callable[P, RawResponse[T]]: ...
    @overload
    def __get__(
        self, obj: Resource[RawAsyncTransport], owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, RawResponse[T]]]: ...
    @overload
    def __get__(self, obj: Resource[SyncTransport], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, obj: Resource[AsyncTransport], owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        transport = obj._transport
        build = self._build
        if isinstance(transport, AsyncTransport):

            async def run_async(*args: P.args, **kwargs: P.kwargs) -> T:
                return await transport.execute(build(obj, *args, **kwargs))

            return functools.wraps(build)(run_async)

        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            return transport.execute(build(obj, *args, **kwargs))  # type: ignore[no-any-return]

        return functools.wraps(build)(run)


class streaming(Generic[P]):
    """Turns a method building an `EventCall` into one returning an `EventStream` / `AsyncEventStream`."""

    def __init__(self, build: Callable[Concatenate[Any, P], EventCall]) -> None:
        self._build = build

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> streaming[P]: ...
    @overload
    def __get__(self, obj: Resource[RawSyncTransport], owner: type[Any]) -> Callable[P, EventStream]: ...
    @overload
    def __get__(
        self, obj: Resource[RawAsyncTransport], owner: type[Any]
    ) -> Callable[P, AsyncEventStream]: ...
    @overload
    def __get__(self, obj: Resource[SyncTransport], owner: type[Any]) -> Callable[P, EventStream]: ...
    @overload
    def __get__(self, obj: Resource[AsyncTransport], owner: type[Any]) -> Callable[P, AsyncEventStream]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        transport = obj._transport
        build = self._build

        def open_stream(*args: P.args, **kwargs: P.kwargs) -> EventStream | AsyncEventStream:
            call = build(obj, *args, **kwargs)
            if isinstance(transport, AsyncTransport):
                return AsyncEventStream(transport.client, call, transport.options)
            return EventStream(transport.client, call, transport.options)

        return functools.wraps(build)(open_stream)


__all__ = [
    "AsyncEventStream",
    "AsyncTransport",
    "Call",
    "EventCall",
    "EventStream",
    "Poll",
    "RawAsyncTransport",
    "RawResponse",
    "RawSyncTransport",
    "RequestOptions",
    "Resource",
    "SyncTransport",
    "endpoint",
    "parse_as",
    "parse_nothing",
    "parse_page",
    "streaming",
]
