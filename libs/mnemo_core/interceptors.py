"""The server interceptor (the actor, the deadline and error mapping, done once for every RPC) and the
metadata a mesh call carries (see channels.py)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from mnemo_core import errors
from mnemo_core.actor import (
    INTERNAL_TOKEN_KEY,
    ORG_KEY,
    ROLE_KEY,
    USER_KEY,
    Actor,
    acting_as,
    current_actor_or_none,
)
from mnemo_core.rpc_errors import from_rpc_error, status_code_of, to_trailing_metadata

log = logging.getLogger(__name__)

# Infrastructure services that answer without an actor.
_EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def _actor_from_metadata(metadata: Any, internal_token: str | None) -> Actor:
    values = {key: value for key, value in metadata or ()}
    if internal_token is not None:
        presented = values.get(INTERNAL_TOKEN_KEY, "")
        if not hmac.compare_digest(str(presented), internal_token):
            raise errors.Unauthenticated("missing or wrong internal token", reason="INTERNAL_TOKEN_INVALID")
    org, user = values.get(ORG_KEY), values.get(USER_KEY)
    if not org or not user:
        raise errors.Unauthenticated(
            f"request carries no actor: send {ORG_KEY} and {USER_KEY} metadata", reason="ACTOR_MISSING"
        )
    return Actor(org_id=str(org), user_id=str(user), role=str(values.get(ROLE_KEY, "")))


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, grpc.aio.AioRpcError):
        exc = from_rpc_error(exc)
    if not isinstance(exc, errors.MnemoError):
        log.exception("unhandled error", exc_info=exc)
        exc = errors.Internal("internal error; see the service log")
    await context.abort(status_code_of(exc), exc.message, to_trailing_metadata(exc))


def _deadline_of(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Puts the caller's actor and deadline in context and maps domain errors to statuses."""

    def __init__(self, internal_token: str | None = None) -> None:
        self._internal_token = internal_token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_EXEMPT_PREFIXES):
            return handler
        try:
            actor: Actor | errors.MnemoError = _actor_from_metadata(
                handler_call_details.invocation_metadata, self._internal_token
            )
        except errors.MnemoError as exc:
            actor = exc
        return _wrap(handler, actor)


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], actor: Actor | errors.MnemoError
) -> grpc.RpcMethodHandler[Any, Any]:
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary  # an async handler under grpc.aio

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                if isinstance(actor, errors.MnemoError):
                    raise actor
                with acting_as(actor, deadline=_deadline_of(context)):
                    return await unary(request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except BaseException as exc:
                await _abort(context, exc)
                raise

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream  # an async generator under grpc.aio

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                if isinstance(actor, errors.MnemoError):
                    raise actor
                with acting_as(actor, deadline=_deadline_of(context)):
                    async for item in stream(request, context):
                        yield item
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException as exc:
                await _abort(context, exc)
                raise

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise errors.Unimplemented("client-streaming RPCs are not used by mnemo")


def outgoing_metadata(internal_token: str | None, extra: Any = None) -> list[tuple[str, str]]:
    """Metadata for a call to another service: the current actor and the internal token."""
    metadata = [(str(k), str(v)) for k, v in extra or ()]
    actor = current_actor_or_none()
    if actor is not None:
        metadata += [(ORG_KEY, actor.org_id), (USER_KEY, actor.user_id)]
        if actor.role:
            metadata.append((ROLE_KEY, actor.role))
    if internal_token is not None:
        metadata.append((INTERNAL_TOKEN_KEY, internal_token))
    return metadata
