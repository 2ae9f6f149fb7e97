"""Liveness (/healthz: the process answers) and readiness (/readyz: the database answers).

Only the database decides readiness: without Redis the code reads entitlements from the database and rate
limits fail open, without RabbitMQ webhooks are still accepted and the outbox waits. Taking every pod out of
the Service when Redis or RabbitMQ blinks would turn a degraded service into an outage, so their state is
reported (in the body and as payments_dependency_up) but never fails the probe.
"""

import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import kombu
import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import Gauge

from payments_project.errors import problem_response

log = structlog.get_logger(__name__)

DEPENDENCY_UP = Gauge(
    "payments_dependency_up",
    "1 when the dependency answered the last readiness check of this pod, else 0",
    ["dependency"],
    multiprocess_mode="livemostrecent",
)

# The cache and broker checks run here, so that a hung Redis or RabbitMQ costs the probe at most the timeout.
# A check stuck past it keeps its thread only until its own socket timeouts end it; while all four are
# stuck, later checks wait in the queue and are reported down when the timeout passes.
_SIDE_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def _check_database(timeout: float) -> None:
    # SET LOCAL: the timeout ends with this transaction, not with the (reused) connection.
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL statement_timeout = %s", [int(timeout * 1000)])
        cursor.execute("SELECT 1")


def _check_cache(timeout: float) -> None:
    key = f"readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=5)
    if cache.get(key) != "1":
        raise RuntimeError("the cache did not return what was written")
    cache.delete(key)


def _check_broker(timeout: float) -> None:
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS}
    if settings.CELERY_BROKER_URL.startswith("amqp"):
        options |= {"read_timeout": timeout, "write_timeout": timeout}  # a broker that accepts and never answers
    with kombu.Connection(settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options) as broker:
        broker.ensure_connection(max_retries=1, timeout=max(1, round(timeout)))


SIDE_CHECKS: dict[str, Callable[[float], None]] = {"cache": _check_cache, "broker": _check_broker}


def _state(name: str, future: Future[None], done: set[Future[None]]) -> str:
    if future not in done:
        log.warning("readiness_check_failed", check=name, error="timed out")
        return "down"
    if (error := future.exception()) is not None:
        log.warning("readiness_check_failed", check=name, error=repr(error))
        return "down"
    return "ok"


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    timeout = settings.READINESS_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    pending = {name: _SIDE_CHECKS.submit(check, timeout) for name, check in SIDE_CHECKS.items()}
    try:
        _check_database(timeout)  # on this thread: Django's connection belongs to it
        states = {"database": "ok"}
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        log.warning("readiness_check_failed", check="database", error=repr(exc))
        states = {"database": "down"}
    done, _ = wait(pending.values(), timeout=max(0.0, deadline - time.monotonic()))
    states |= {name: _state(name, future, done) for name, future in pending.items()}
    for name, state in states.items():
        DEPENDENCY_UP.labels(name).set(state == "ok")
    if states["database"] != "ok":
        return problem_response(
            request,
            status=503,
            code="not_ready",
            title="Not ready",
            detail="The database does not answer",
            headers={"Retry-After": "5"},
            extra=states,
        )
    return JsonResponse(states)
