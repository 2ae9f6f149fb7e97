"""OpenTelemetry traces: on in every process (web, worker, beat, manage) when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Started from AppConfig.ready(), which every process passes before its first request (Django's middleware),
database connection (psycopg) or task (Celery's signals). The SDK reads its own variables (sampler, service
name, resource, batching); this module picks the instrumentations and keeps personal data out of what leaves
the process: only attributes on an allow-list are exported, and ids in URLs are masked (`_Scrubbing`).

W3C trace context travels in Celery task headers (Celery's instrumentation), in Stripe calls (requests'),
in each outbox CloudEvent (`traceparent`, see tasks.outbox) and on each inbox row, for the processing span's
link back to its ingestion request (webhooks.services).
"""

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from payments_project.url_secrets import redact_path

if TYPE_CHECKING:  # the SDK is loaded only by processes that trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_W3C = TraceContextTextMapPropagator()
# Requests that would only add noise: probes and scrapes.
EXCLUDED_URLS = "healthz,readyz,metrics"

tracer = trace.get_tracer("jia.payments")


def current_traceparent() -> str:
    """The W3C traceparent of the active span (its flags say whether it is sampled), or "" when none is active."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def span_context(traceparent: str) -> trace.SpanContext | None:
    """The span a stored traceparent names, or None for an empty or malformed one."""
    if not traceparent:
        return None
    found = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
    return found if found.is_valid else None


@contextmanager
def job_span(
    name: str, *, parent: str = "", links: Sequence[str] = (), attributes: Mapping[str, Any] | None = None
) -> Iterator[trace.Span]:
    """A span for one run of a job, current while it runs. `parent`: a stored traceparent to continue
    (otherwise the active context, e.g. the Celery task's, is the parent); `links`: stored traceparents
    of what led to it (e.g. the request that received the job), whatever path the job took to this run."""
    parent_context = span_context(parent)
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent_context)) if parent_context else None
    linked = [trace.Link(found) for found in map(span_context, links) if found is not None]
    with tracer.start_as_current_span(name, context=context, links=linked, attributes=attributes) as span:
        yield span


# --- starting it ------------------------------------------------------------------------------------------


def tracing_start(*, exporter: "SpanExporter | None" = None) -> "TracerProvider":
    """Install the SDK as the global tracer provider and instrument Django, Celery, psycopg, Redis and
    requests (stripe-python's HTTP client). `exporter`: where spans go; OTLP/HTTP from OTEL_* by default.
    The SDK and the instrumentations are imported here: only processes that trace load them."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the default name; OTEL_TRACES_SAMPLER (and
    # _ARG) pick the sampler: TracerProvider reads them itself.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "jia-payments"}))
    provider.add_span_processor(BatchSpanProcessor(_scrubbing(exporter or OTLPSpanExporter())))
    trace.set_tracer_provider(provider)
    instrument(provider)
    return provider


def instrument(provider: "TracerProvider") -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=EXCLUDED_URLS)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)


def uninstrument() -> None:
    """Undo instrument() (tests that traced hand the process back as they found it)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    for instrumentor in (
        DjangoInstrumentor(),
        CeleryInstrumentor(),
        PsycopgInstrumentor(),
        RedisInstrumentor(),
        RequestsInstrumentor(),
    ):
        instrumentor.uninstrument()


# --- what leaves the process ------------------------------------------------------------------------------

# Attribute keys (or prefixes ending in ".") that carry no personal data. Anything else is dropped: a client's
# address, user agent, headers, a task's arguments, an exception's message (Sentry, scrubbed, has those).
_ALLOWED = (
    "http.method",
    "http.request.method",
    "http.route",
    "http.scheme",
    "http.status_code",
    "http.response.status_code",
    "http.flavor",
    "network.protocol.version",
    "url.scheme",
    "server.address",
    "server.port",
    "net.host.name",
    "net.host.port",
    "net.peer.name",
    "net.peer.port",
    "db.system",
    "db.name",
    "db.namespace",
    "db.operation",
    "db.operation.name",
    "db.statement",  # SQL with placeholders (Django binds values apart); Redis: "COMMAND ? ?"
    "db.query.text",
    "db.redis.database_index",
    "celery.",
    "messaging.",
    "error.type",
    "exception.type",
    "exception.escaped",
    "jia.",
)
# Kept with the ids in them masked: user ids, order ids, Stripe object ids are in our paths and Stripe's.
_URL_KEYS = ("http.target", "http.url", "url.path", "url.full")
_IDS_IN_URLS = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"  # UUIDs
    r"|\b[a-z]{2,5}_[A-Za-z0-9]{6,}"  # Stripe ids: cus_…, sub_…, pi_…, cs_test_…
)


def _allowed(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in _ALLOWED)


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes that may leave the process: allow-listed keys, URLs without query and with ids masked."""
    kept: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in _URL_KEYS:
            kept[key] = _IDS_IN_URLS.sub("{id}", redact_path(str(value).split("?", 1)[0]))
        elif _allowed(key):
            kept[key] = value
    return kept


def _scrubbing(exporter: "SpanExporter") -> "SpanExporter":
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Status

    def scrubbed(span: ReadableSpan) -> ReadableSpan:
        return ReadableSpan(
            name=redact_path(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=scrub_attributes(span.attributes),
            events=[Event(e.name, scrub_attributes(e.attributes), e.timestamp) for e in span.events],
            links=[trace.Link(link.context, scrub_attributes(link.attributes)) for link in span.links],
            kind=span.kind,
            status=Status(span.status.status_code),  # the description is an exception's message
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    class Scrubbing(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> "SpanExportResult":
            return exporter.export([scrubbed(span) for span in spans])

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return Scrubbing()
