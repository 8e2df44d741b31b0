"""Hooks around each call of a gRPC method handler: what the server interceptors that only watch or admit
calls (metrics, audit, rate limits) share, instead of each re-wrapping unary and streaming handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

# Called with the call's failure (None when it succeeded) as the call ends.
Finish = Callable[[BaseException | None], None]
# Called as each call begins, with its request and context; raising refuses the call. The Finish it returns,
# if any, is called as the call ends.
Start = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Finish | None]


def around_each_call(
    handler: grpc.RpcMethodHandler[Any, Any], start: Start
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` (unary or server-streaming, async) with `start` run around each of its calls."""
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            finish = start(request, context)
            if finish is None:
                return await unary(request, context)
            try:
                response = await unary(request, context)
            except BaseException as exc:
                finish(exc)
                raise
            finish(None)
            return response

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            finish = start(request, context)
            try:
                async for item in stream(request, context):
                    yield item
            except BaseException as exc:
                if finish is not None:
                    finish(exc)
                raise
            if finish is not None:
                finish(None)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
