"""Liveness (/healthz: the process answers) and readiness (/readyz: its dependencies answer)."""

import uuid
from collections.abc import Callable

import kombu
import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from payments_project.errors import problem_response

log = structlog.get_logger(__name__)


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
    with kombu.Connection(
        settings.CELERY_BROKER_URL,
        connect_timeout=timeout,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    ) as broker:
        broker.ensure_connection(max_retries=1, timeout=max(1, round(timeout)))


CHECKS: dict[str, Callable[[float], None]] = {
    "database": _check_database,
    "cache": _check_cache,
    "broker": _check_broker,
}


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    timeout = settings.READINESS_TIMEOUT_SECONDS
    checks: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check(timeout)
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log
            log.warning("readiness_check_failed", check=name, error=repr(exc))
            checks[name] = "unavailable"
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return problem_response(
            request,
            status=503,
            code="not_ready",
            title="Not ready",
            detail=f"Unreachable: {', '.join(failed)}",
            headers={"Retry-After": "5"},
            extra={"checks": checks},
        )
    return JsonResponse({"status": "ok", "checks": checks})
