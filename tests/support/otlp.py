"""Tracing in tests: a small OTLP/HTTP receiver for spans from worker and server subprocesses (which export
with the production code path, OTEL_EXPORTER_OTLP_ENDPOINT), and the SDK's in-memory exporter for this
process, behind the same scrubbing exporter as production (payments_project.tracing)."""

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connections
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payments_project import tracing


@dataclass(frozen=True)
class Span:
    """A finished span, from whichever process: ids as W3C hex."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    kind: str
    service: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace_id, span_id)

    def traceparent_ids(self) -> tuple[str, str]:
        return self.trace_id, self.span_id


def ids(traceparent: str) -> tuple[str, str]:
    """(trace_id, span_id) of a W3C traceparent."""
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf exports on a loopback port (POST /v1/traces) and keeps their spans."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def env(self, **more: str) -> dict[str, str]:
        """The environment that makes a subprocess trace to this receiver, exporting at once."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100", **more}

    def _add(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        Span(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")[span.kind],
                            service=str(resource.get("service.name", "")),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        )
                    )
        with self._lock:
            self.spans += found

    def wait_for(self, condition: Callable[[list[Span]], bool], *, timeout: float = 30) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spans = list(self.spans)
            if condition(spans):
                return spans
            time.sleep(0.1)
        with self._lock:
            return list(self.spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def from_sdk(span: ReadableSpan) -> Span:
    context = span.get_span_context()
    assert context is not None
    return Span(
        name=span.name,
        trace_id=trace.format_trace_id(context.trace_id),
        span_id=trace.format_span_id(context.span_id),
        parent_id=trace.format_span_id(span.parent.span_id) if span.parent else "",
        kind=span.kind.name,
        service=str(span.resource.attributes.get("service.name", "")),
        attributes=dict(span.attributes or {}),
        links=[
            (trace.format_trace_id(link.context.trace_id), trace.format_span_id(link.context.span_id))
            for link in span.links
        ],
    )


class Traced:
    """This process, traced: the production set-up with the SDK's in-memory exporter."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.provider, self.exporter = provider, exporter

    def spans(self) -> list[Span]:
        self.provider.force_flush()
        return [from_sdk(span) for span in self.exporter.get_finished_spans()]


_process: tuple[TracerProvider, InMemorySpanExporter] | None = None


@pytest.fixture
def traced() -> Iterator[Traced]:
    """Trace this process for one test (the SDK's global provider can be set once per process: the first
    test that asks sets it; each test instruments, and uninstruments afterwards)."""
    global _process
    if _process is None:
        exporter = InMemorySpanExporter()
        _process = (tracing.tracing_start(exporter=exporter), exporter)
    else:
        tracing.instrument(_process[0])
    provider, exporter = _process
    exporter.clear()
    connections.close_all()  # the next ones connect through the instrumented psycopg
    try:
        yield Traced(provider, exporter)
    finally:
        provider.force_flush()
        tracing.uninstrument()
        connections.close_all()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()
