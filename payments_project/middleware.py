"""Request id and problem+json middleware (the outermost of our own HTTP layer)."""

import functools
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

import structlog
from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, ResolverMatch, resolve
from django_prometheus.middleware import Metrics
from opentelemetry import trace

from payments_project.errors import (
    PROBLEM_CONTENT_TYPE,
    ApplicationError,
    PayloadTooLarge,
    application_error_response,
    database_busy,
    problem_response,
)
from payments_project.request_timing import RequestDurationMiddleware

# An incoming id is echoed only when it cannot smuggle anything into logs or headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# Headers of an error response worth keeping when it is rewritten as problem+json.
_KEPT_HEADERS = ("Retry-After", "Allow", "WWW-Authenticate")


class RequestIdMiddleware:
    """Accept a sane X-Request-ID or make one; bind it (and the trace id) to every log line; echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_bound(request)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def request_id_bound(request: HttpRequest) -> str:
    """The request's id (a sane X-Request-ID, or a new one), set on it and bound, with the trace id, to
    every log line from here on (RequestIdMiddleware; the hot path's answers from memory)."""
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")  # not request.headers: it copies every header
    request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    request.request_id = request_id  # type: ignore[attr-defined]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    span = trace.get_current_span().get_span_context()
    if span.is_valid:  # bound, not only read from the span: gunicorn's access line comes after it ended
        structlog.contextvars.bind_contextvars(trace_id=trace.format_trace_id(span.trace_id))
    return request_id


class ProblemJsonMiddleware:
    """Every error under the API prefixes is problem+json, Django's own 404 and 500 included."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(settings.PROBLEM_JSON_PATH_PREFIXES)
            and not response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
        ):
            status = HTTPStatus(response.status_code)
            return problem_response(
                request,
                status=status.value,
                code=status.phrase.lower().replace(" ", "_").replace("-", "_"),
                title=status.phrase,
                detail=status.description or status.phrase,
                headers={name: response[name] for name in _KEPT_HEADERS if response.has_header(name)},
            )
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return exception_problem(request, exception)


def exception_problem(request: HttpRequest, exception: Exception) -> HttpResponse | None:
    """The problem+json answer to an error a plain Django view (the webhook endpoint) raised, as DRF views
    answer it; None when it is not ours to answer (Django's handler makes it a 500)."""
    if isinstance(exception, ApplicationError):
        return application_error_response(request, exception)
    if busy := database_busy(exception):
        return application_error_response(request, busy)
    return None


class BodySizeLimitMiddleware:
    """413 problem+json for an API request whose Content-Length is over the limit, before any view runs,
    whether or not the view reads its body: API_MAX_BODY_BYTES under /api/ and /internal/ (JSONBodyParser
    also counts what it reads), WEBHOOK_MAX_BODY_BYTES under /webhooks/. A body without Content-Length
    (chunked) reads as empty in Django, so it cannot get past this either."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(settings.PROBLEM_JSON_PATH_PREFIXES):
            webhook = request.path.startswith("/webhooks/")
            limit = settings.WEBHOOK_MAX_BODY_BYTES if webhook else settings.API_MAX_BODY_BYTES
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                return application_error_response(
                    request, PayloadTooLarge(f"The body is larger than {limit // 1024} KiB")
                )
        return self.get_response(request)


# Paths whose views need none of the project's middleware but request ids, problem+json, the body size
# limit, timing and security headers: stateless JSON reads other services call on every request they
# serve (issue 18), Stripe's webhook deliveries, authenticated by their signature alone (issue 17), and the
# checkout, a JWT-authenticated JSON POST that no browser middleware concerns (issue 18, target 3).
HOT_PATH_PREFIXES = (
    "/api/v1/entitlements",
    "/api/v1/checkout/sessions",
    "/internal/v1/entitlements/",
    "/internal/v1/users/",
    "/webhooks/",
)
HOT_URLCONF = "payments_project.hot_urls"  # their routes only: resolving them skips every other pattern
# As django-prometheus labels them (PrometheusAfterMiddleware._method).
_COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})
_RESPONSES = Metrics.get_instance().responses_by_status_view_method
# Its children by (status, view, method): labels() validates and looks one up under a lock each time.
_responses: dict[tuple[str, str, str], Any] = {}


@functools.lru_cache(maxsize=256)
def hot_route(path_info: str) -> ResolverMatch | None:
    """The hot route a path names, or None when it is not one (the whole stack answers it). Remembered by
    path: resolving cost as much CPU as the rest of Django's handler, and the hot paths are few (one per
    feature key); a path beyond the bound costs a resolve. Nothing changes a ResolverMatch once made."""
    if not path_info.startswith(HOT_PATH_PREFIXES):
        return None
    try:
        return resolve(path_info, urlconf=HOT_URLCONF)
    except Resolver404:
        return None


class _Scheme:
    """All SecurityMiddleware.process_response asks of a request."""

    def __init__(self, secure: bool) -> None:
        self.secure = secure

    def is_secure(self) -> bool:
        return self.secure


def _added_headers(security: SecurityMiddleware, secure: bool) -> tuple[tuple[str, str], ...]:
    """The headers `security` adds to a response over HTTPS (secure) or plain HTTP that has none of them,
    in its order: what it reads of the settings is read once, when it is made."""
    probe = HttpResponse()
    given = set(probe.headers)
    security.process_response(cast(HttpRequest, _Scheme(secure)), probe)
    return tuple((name, value) for name, value in probe.items() if name not in given)


class HotPathMiddleware:
    """First in MIDDLEWARE: on HOT_PATH_PREFIXES, call the view through only the middleware it needs.

    Those are the same classes MIDDLEWARE lists (request timing, request id, problem+json, body size
    limit) and SecurityMiddleware's headers, chained once here; the rest (django-prometheus, WhiteNoise,
    sessions, CSRF, Django auth, OTP, messages, frame options, axes, django-ratelimit) never runs, and
    neither does Django's per-middleware exception wrapping. Only what Django's handler would do for
    these views is done: resolve, call, render (DRF's responses are template responses). A path that
    does not resolve goes down the whole stack as usual (404s, APPEND_SLASH).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._security = SecurityMiddleware(get_response)  # its process_request/_response only
        self._security_headers = {secure: _added_headers(self._security, secure) for secure in (False, True)}
        # An exception in the view goes to ProblemJsonMiddleware.process_exception, as Django's handler
        # would send it (ApplicationError -> its problem); any other becomes Django's 500 here, so it is
        # still timed, id'd and problem+json.
        view = cast(Callable[[HttpRequest], HttpResponse], convert_exception_to_response(self._view))  # sync
        self._problems = ProblemJsonMiddleware(BodySizeLimitMiddleware(view))
        self._hot = RequestDurationMiddleware(RequestIdMiddleware(self._problems))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        match = hot_route(request.path_info)
        if match is None:
            return self.get_response(request)
        request.resolver_match = match
        return self.respond(request)

    def respond(self, request: HttpRequest) -> HttpResponse:
        """The answer of the hot route in request.resolver_match (payments_project.hot_path calls it
        from outside Django's handler)."""
        redirect = self._security.process_request(request)  # SECURE_SSL_REDIRECT
        response = self._security.process_response(request, redirect or self._hot(request))
        if not response.streaming and not response.has_header("Content-Length"):
            # As CommonMiddleware does on every other route. Without it gunicorn sends the body chunked: a
            # third write and TCP segment per response (its closing chunk), for the caller to read too.
            response["Content-Length"] = str(len(response.content))
        self.count(request, response.status_code)
        return response

    def count(self, request: HttpRequest, status_code: int) -> None:
        """The one django-prometheus series the HighServerErrorRate alert divides (helm
        monitoring/alerts.yaml): without it a hot route's 5xx (a failed checkout) would page no one."""
        match = request.resolver_match
        labels = (
            str(status_code),
            (match.view_name if match else None) or "<unnamed view>",
            request.method if request.method in _COUNTED_METHODS else "<invalid method>",
        )
        counter = _responses.get(labels)
        if counter is None:
            counter = _responses.setdefault(labels, _RESPONSES.labels(*labels))
        counter.inc()

    def redirects(self, request: HttpRequest) -> bool:
        """Whether SecurityMiddleware sends the request elsewhere (SECURE_SSL_REDIRECT) instead of answering it."""
        return self._security.process_request(request) is not None

    def security_headers(self, request: HttpRequest) -> tuple[tuple[str, str], ...]:
        """The headers SecurityMiddleware adds to an answer that has none of them, for this request."""
        return self._security_headers[request.is_secure()]

    def _view(self, request: HttpRequest) -> HttpResponse:
        match = request.resolver_match
        assert match is not None  # set by __call__
        try:
            response = match.func(request, *match.args, **match.kwargs)
        except Exception as exc:
            problem = self._problems.process_exception(request, exc)
            if problem is None:
                raise
            return problem
        if callable(getattr(response, "render", None)):
            response = response.render()
        return response
