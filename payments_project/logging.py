"""structlog JSON logs for web and workers; stdlib logging (Django, Celery, gunicorn) goes through it.

Context bound with structlog.contextvars (request_id, user_id, task_id) appears on every line, and the active
span's trace_id and span_id when tracing is on. A task inherits the request_id of the request that enqueued it.
"""

from typing import Any, cast

import sentry_sdk
import structlog
from opentelemetry import trace
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from payments_project.url_secrets import redact_paths, redact_sentry_breadcrumb, redact_sentry_event


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


def sentry_init(dsn: str, *, environment: str, traces_sample_rate: float) -> None:
    """Errors of web and workers to Sentry, without personal data. Called by the settings when SENTRY_DSN is set."""
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        traces_sample_rate=traces_sample_rate,
        before_send=cast(Any, redact_sentry_event),  # a plain dict in, the same out
        before_breadcrumb=redact_sentry_breadcrumb,
    )
