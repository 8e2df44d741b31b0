"""A real OTLP/HTTP trace receiver for tests: services export to it, tests read the spans back."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.background import BackgroundServer, free_port


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
        self._http = BackgroundServer(app, self.port)

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
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)
