"""A real OTLP/HTTP trace receiver for tests: services export to it, tests read the spans back."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.llm_provider import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    """The parts of an exported span that tests look at."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    kind: int


class OtlpReceiver:
    """Accepts `POST /v1/traces` (protobuf) on a free port, in a background thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _traces(self, request: Request) -> Response:
        export = ExportTraceServiceRequest.FromString(await request.body())
        received = []
        for resource_spans in export.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attrs.get("service.name", "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            service=service,
                            kind=span.kind,
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    def start(self) -> OtlpReceiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("OTLP receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)
