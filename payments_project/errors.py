"""One error hierarchy, rendered as RFC 9457 application/problem+json with the request id.

Services raise ApplicationError subclasses (stable `code`s); the DRF exception handler and the
ProblemJsonMiddleware turn them, DRF's own errors and Django's 404/500 into problem documents.
"""

from collections.abc import Mapping
from typing import Any

import psycopg
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django_ratelimit.exceptions import Ratelimited
from psycopg_pool import PoolTimeout
from rest_framework import exceptions as drf_exceptions

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:jia:payments:problem:"


class ApplicationError(Exception):
    """Base of every error we expect; `code` is stable and part of the API contract."""

    status_code = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.errors = errors
        self.headers = dict(headers or {})
        super().__init__(self.detail)


class ValidationFailed(ApplicationError):
    code = "validation_error"
    title = "The request is invalid"


class Forbidden(ApplicationError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"
    title = "Not found"


class Conflict(ApplicationError):
    status_code = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(ApplicationError):
    status_code = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(ApplicationError):
    status_code = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class UnprocessableEntity(ApplicationError):
    status_code = 422
    code = "unprocessable"
    title = "Unprocessable request"


class RateLimited(ApplicationError):
    status_code = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


# Retry-After when only django-ratelimit's bare Ratelimited is known (it carries no window).
RATELIMITED_RETRY_AFTER_SECONDS = 60


class UpstreamFailed(ApplicationError):
    status_code = 502
    code = "upstream_failed"
    title = "An upstream service failed"


class DependencyUnavailable(ApplicationError):
    status_code = 503
    code = "dependency_unavailable"
    title = "A dependency is unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 30) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class DatabaseBusy(DependencyUnavailable):
    """PostgreSQL gave up on us within our timeouts (a row locked elsewhere, a statement too slow, no pooled
    connection free): nothing was changed, and the same request may well succeed shortly."""

    code = "database_busy"
    title = "The database is busy"

    def __init__(self, detail: str | None = None, *, retry_after: int = 2) -> None:
        super().__init__(detail, retry_after=retry_after)


def database_busy(exc: BaseException) -> DatabaseBusy | None:
    """The 503 for a database error that one of our timeouts caused (settings: DATABASE_SESSION_TIMEOUTS,
    DATABASE_POOL_TIMEOUT_SECONDS), or None for any other error."""
    if not isinstance(exc, OperationalError):
        return None
    cause = exc.__cause__  # Django's error wraps psycopg's
    if isinstance(cause, psycopg.errors.LockNotAvailable):
        return DatabaseBusy("What this request changes is locked by another operation; try again shortly")
    if isinstance(cause, psycopg.errors.QueryCanceled):
        return DatabaseBusy("The database took too long to answer; try again shortly")
    if isinstance(cause, PoolTimeout):
        return DatabaseBusy("No database connection was free in time; try again shortly")
    return None


def problem_response(
    request: HttpRequest,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> HttpResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": getattr(request, "request_id", None),
    }
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    response = JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def application_error_response(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    return problem_response(
        request,
        status=error.status_code,
        code=error.code,
        title=error.title,
        detail=error.detail,
        errors=error.errors,
        headers=error.headers,
    )


def _field_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested ValidationError detail into [{"field", "message"}]."""
    if isinstance(detail, Mapping):
        errors: list[dict[str, str]] = []
        for key, value in detail.items():
            if isinstance(key, int):  # a ListField's child errors come keyed by index
                path = f"{prefix}[{key}]"
            elif key == "non_field_errors":
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            errors += _field_errors(value, path)
        return errors
    if isinstance(detail, list):
        if all(not isinstance(item, Mapping | list) for item in detail):
            return [{"field": prefix, "message": str(item)} for item in detail]
        errors = []
        for index, item in enumerate(detail):
            errors += _field_errors(item, f"{prefix}[{index}]")
        return errors
    return [{"field": prefix, "message": str(detail)}]


_DRF_STATUS_TITLES = {
    400: "The request is invalid",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    415: "Unsupported media type",
    429: "Too many requests",
}


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: every API error becomes problem+json."""
    request = context["request"]
    if isinstance(exc, ApplicationError):
        return application_error_response(request, exc)
    if busy := database_busy(exc):
        return application_error_response(request, busy)
    if isinstance(exc, Ratelimited):  # django-ratelimit's own decorator; ours raises RateLimited itself
        return application_error_response(request, RateLimited(retry_after=RATELIMITED_RETRY_AFTER_SECONDS))
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a bug: Django's 500 handling logs it, the middleware renders the problem
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    if isinstance(exc, drf_exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
        code = "validation_error"
    else:
        errors = None
        detail = str(exc.detail)
        code = str(exc.default_code)
    return problem_response(
        request,
        status=exc.status_code,
        code=code,
        title=_DRF_STATUS_TITLES.get(exc.status_code, "Request failed"),
        detail=detail,
        errors=errors,
        headers=headers,
    )
