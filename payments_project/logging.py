"""structlog JSON logs for web and workers; stdlib logging (Django, Celery, gunicorn) goes through it.

Context bound with structlog.contextvars (request_id, user_id, task_id) appears on every line, and the active
span's trace_id and span_id when tracing is on. A task inherits the request_id of the request that enqueued it.
"""

import re
from typing import Any

import sentry_sdk
import structlog
from opentelemetry import trace
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from payments_project.schedule import sub_minute_entries
from payments_project.url_secrets import redact_path, redact_paths


def add_trace_ids(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The active span's trace and span id, so a log line leads to its trace (none while tracing is off). They
    win over a trace_id bound earlier (a request's, a task's): a job may run in another trace than its task."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(span.trace_id)
        event_dict["span_id"] = trace.format_span_id(span.span_id)
    return event_dict


_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    add_trace_ids,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    redact_paths,  # last: whatever the line carries (a path, Django's "Not Found: /…"), no secret in a URL
]


def logging_config(level: str) -> dict[str, Any]:
    """Configure structlog and return the matching stdlib LOGGING dict for Django settings."""
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
                "foreign_pre_chain": _SHARED_PROCESSORS,
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            # Celery installs its own handlers unless told otherwise; keep one JSON stream.
            "celery": {"level": level, "propagate": True},
        },
    }


# Sentry never receives personal data (DESIGN "Deployed as shipped"). The SDK is told to send none (no request
# bodies, no local variables, no default PII); what still carries text from our data (exception messages, log
# lines, headers, breadcrumbs, span data) goes through _scrub_event.
FILTERED = "[Filtered]"
# Keys whose values are personal data or credentials wherever they appear (headers compared as lower_snake).
_SECRET_KEYS = frozenset(
    {
        "email", "name", "first_name", "last_name", "full_name", "address", "line1", "line2", "city",
        "postal_code", "zip", "phone", "shipping", "billing_details", "customer_details", "customer_email",
        "customer_name", "authorization", "proxy_authorization", "cookie", "set_cookie", "stripe_signature",
        "x_forwarded_for", "x_real_ip", "x_forwarded_client_cert", "token", "access_token", "refresh_token",
        "id_token", "password", "secret", "api_key", "remote_addr", "ip_address",
    }
)  # fmt: skip
_SECRET_TEXT = [
    re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),  # email addresses
    re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"),  # JWTs
    re.compile(r"(?i)bearer\s+\S+"),
    re.compile(r"t=\d+,v\d=[0-9a-f]+(,v\d=[0-9a-f]+)*"),  # Stripe-Signature
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_\w+|\bwhsec_\w+"),  # Stripe keys, webhook secrets
]
# Our messages quote the input they reject (`metadata.user_id 'Alice Liddell' is not a UUID`), and a log
# line's message is its fields' repr: a quoted value in an exception or log message may be anything a
# customer typed, so it goes too.
_QUOTED = re.compile(r"'[^']*'(?!:)")  # not a dict's key: a structlog line's field names stay
SENT_HEADERS = ("accept", "content-type", "content-length", "user-agent", "x-request-id", "idempotency-key")
# What the SDK describes itself, the machine and the runtime with: nothing of ours.
_SDK_KEYS = frozenset({"sdk", "modules", "debug_meta", "platform", "server_name"})
_SDK_CONTEXTS = frozenset({"runtime", "os", "device", "app"})


def _scrub_text(text: str, *, quoted: bool = False) -> str:
    text = redact_path(text)  # an invitation token in a URL (the request's, a transaction's, a breadcrumb's)
    for pattern in _SECRET_TEXT:
        text = pattern.sub(FILTERED, text)
    return _QUOTED.sub(FILTERED, text) if quoted else text


def _scrub(value: Any, *, quoted: bool = False) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, quoted=quoted)
    if isinstance(value, dict):
        return {
            key: FILTERED
            if str(key).lower().replace("-", "_") in _SECRET_KEYS and value[key]
            else _scrub(value[key], quoted=quoted or key in {"value", "message", "formatted", "params"})
            for key in value
        }
    if isinstance(value, list | tuple):
        return [_scrub(item, quoted=quoted) for item in value]
    return value


def _scrub_event(event: Any, hint: Any) -> Any:
    """before_send and before_send_transaction: the event without personal data or credentials."""
    contexts = event.get("contexts") or {}
    return {
        **{key: value if key in _SDK_KEYS else _scrub(value) for key, value in event.items()},
        "contexts": {name: ctx if name in _SDK_CONTEXTS else _scrub(ctx) for name, ctx in contexts.items()},
    }


def _scrub_breadcrumb(crumb: Any, hint: Any) -> Any:
    return _scrub(crumb)


def sentry_init(dsn: str, *, environment: str, release: str, traces_sample_rate: float, transport: Any = None) -> None:
    """Errors of web and workers to Sentry, without personal data; beat's jobs as Sentry Crons monitors.
    Called by the settings when SENTRY_DSN is set (`transport`: tests record what would be sent)."""
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release or None,
        integrations=[
            DjangoIntegration(),
            # A check-in per beat run: Sentry alerts when a job is missed, fails or overruns.
            CeleryIntegration(monitor_beat_tasks=True, exclude_beat_tasks=sub_minute_entries()),
        ],
        # What the integrations collect by themselves (this supersedes send_default_pii, deprecated in
        # sentry-sdk 2.75, and means send_default_pii=False): no user, cookies, bodies, query strings, SQL
        # parameters, queue messages or local variables; of the request headers only these.
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {"request": {"mode": "allowlist", "terms": list(SENT_HEADERS)}},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "database_query_data": False,
            "queues": False,
            "stack_frame_variables": False,
        },
        max_request_body_size="never",
        include_local_variables=False,
        before_send=_scrub_event,
        before_send_transaction=_scrub_event,
        before_breadcrumb=_scrub_breadcrumb,
        traces_sample_rate=traces_sample_rate,
        transport=transport,
    )
