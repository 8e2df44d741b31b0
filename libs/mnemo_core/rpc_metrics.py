"""RPC metrics of a gRPC server: the duration of every call by method and status code, and failures by their
ErrorInfo reason. Installed as the outermost interceptor, so it sees the status the caller sees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from mnemo_core.call_hooks import Finish, around_each_call
from mnemo_core.metrics import duration_histogram, meter
from mnemo_core.rpc_errors import DETAILS_KEY

_meter = meter("mnemo.rpc")
_duration = duration_histogram(
    _meter, "rpc.server.duration", "Duration of gRPC calls served, by method and code."
)
_errors = _meter.create_counter(
    "mnemo.rpc.server.errors",
    unit="{call}",
    description="gRPC calls that failed, by method, code and reason.",
)
_EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _code_of(context: grpc.aio.ServicerContext[Any, Any], failure: BaseException | None) -> grpc.StatusCode:
    code: Any = context.code()
    if isinstance(code, int):
        code = _CODES.get(code, grpc.StatusCode.UNKNOWN)
    if isinstance(code, grpc.StatusCode):
        return code
    if failure is None:
        return grpc.StatusCode.OK
    if isinstance(failure, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _reason_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.trailing_metadata() or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return str(info.reason)
    return ""


class _Call:
    """Times one call and records it when it ends."""

    def __init__(self, service: str, method: str) -> None:
        self._attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        self._started = time.perf_counter()

    def end(self, context: grpc.aio.ServicerContext[Any, Any], failure: BaseException | None) -> None:
        code = _code_of(context, failure)
        attributes = {**self._attributes, "rpc.grpc.status_code": code.name}
        _duration.record(time.perf_counter() - self._started, attributes)
        if code != grpc.StatusCode.OK:
            _errors.add(1, {**attributes, "error.reason": _reason_of(context) or code.name})


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Records `rpc.server.duration` and `mnemo.rpc.server.errors` for every RPC but health and reflection."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or full.startswith(_EXEMPT_PREFIXES):
            return handler
        service, _, method = full.lstrip("/").rpartition("/")

        def start(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Finish:
            call = _Call(service, method)
            return lambda failure: call.end(context, failure)

        return around_each_call(handler, start)
