"""The server interceptor (the actor, the deadline and error mapping, done once for every RPC) and the
metadata a mesh call carries (see channels.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from mnemo_core import errors, mesh_credential
from mnemo_core.actor import (
    AUTHORIZATION_KEY,
    ORG_KEY,
    ROLE_KEY,
    USER_KEY,
    Actor,
    acting_as,
    current_actor_or_none,
)
from mnemo_core.api_keys import KeyResolver
from mnemo_core.rpc_errors import from_rpc_error, status_code_of, to_trailing_metadata

log = logging.getLogger(__name__)

# Infrastructure services that answer without an actor.
_EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class _Bearer:
    """An API key presented by an external caller, resolved when the call is served."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


_Caller = Actor | errors.MnemoError | _Bearer


def _caller_from_metadata(metadata: Any, credential: str) -> _Caller:
    """Who calls: an API key (external clients), or an actor signed with the mesh's credential (internal hops)."""
    values = {key: value for key, value in metadata or ()}
    authorization = str(values.get(AUTHORIZATION_KEY, ""))
    if authorization:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return errors.Unauthenticated(
                "send 'authorization: Bearer <API key>' metadata", reason="API_KEY_MISSING"
            )
        return _Bearer(key.strip())
    org, user = values.get(ORG_KEY), values.get(USER_KEY)
    if not org or not user:
        return errors.Unauthenticated(
            "request carries no credentials: send 'authorization: Bearer <API key>' metadata",
            reason="API_KEY_MISSING",
        )
    actor = Actor(org_id=str(org), user_id=str(user), role=str(values.get(ROLE_KEY, "")))
    if not mesh_credential.verify(credential, actor, str(values.get(mesh_credential.SIGNATURE_KEY, ""))):
        return errors.Unauthenticated(
            "actor metadata without a valid internal signature: external callers send an API key",
            reason="INTERNAL_SIGNATURE_INVALID",
        )
    return actor


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
    """Authenticates the caller, puts its actor and deadline in context and maps domain errors to statuses.

    `credential` is the mesh's internal key (internal hops sign their actor with it); `keys` resolves the API
    keys of external callers (without it, API keys are refused).
    """

    def __init__(self, credential: str, keys: KeyResolver | None = None) -> None:
        self._credential = credential
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_EXEMPT_PREFIXES):
            return handler
        caller = _caller_from_metadata(handler_call_details.invocation_metadata, self._credential)
        return _wrap(handler, caller, self._keys)


async def _authenticate(caller: _Caller, keys: KeyResolver | None) -> Actor:
    if isinstance(caller, Actor):
        return caller
    if isinstance(caller, errors.MnemoError):
        raise caller
    if keys is None:
        raise errors.Unauthenticated("this server does not accept API keys", reason="API_KEY_INVALID")
    return await keys.resolve(caller.key)


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], caller: _Caller, keys: KeyResolver | None
) -> grpc.RpcMethodHandler[Any, Any]:
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary  # an async handler under grpc.aio

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                actor = caller if isinstance(caller, Actor) else await _authenticate(caller, keys)
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
                actor = caller if isinstance(caller, Actor) else await _authenticate(caller, keys)
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


def outgoing_metadata(credential: str, extra: Any = None) -> list[tuple[str, str]]:
    """Metadata for a call to another service: the current actor, signed with the mesh's `credential`."""
    metadata = [(str(k), str(v)) for k, v in extra or ()]
    actor = current_actor_or_none()
    if actor is not None:
        metadata += mesh_credential.actor_metadata(credential, actor)
    return metadata
