"""Request id and problem+json middleware (the outermost of our own HTTP layer)."""

import re
import uuid
from collections.abc import Callable
from http import HTTPStatus

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from opentelemetry import trace

from payments_project.errors import PROBLEM_CONTENT_TYPE, ApplicationError, application_error_response, problem_response

# An incoming id is echoed only when it cannot smuggle anything into logs or headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# Headers of an error response worth keeping when it is rewritten as problem+json.
_KEPT_HEADERS = ("Retry-After", "Allow", "WWW-Authenticate")


class RequestIdMiddleware:
    """Accept a sane X-Request-ID or make one; bind it (and the trace id) to every log line; echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # bound, not only read from the span: gunicorn's access line comes after it ended
            structlog.contextvars.bind_contextvars(trace_id=trace.format_trace_id(span.trace_id))
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


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
        # Plain Django views (the webhook endpoint) raise the same errors as DRF views.
        if isinstance(exception, ApplicationError):
            return application_error_response(request, exception)
        return None


# Paths whose views need none of the middleware after HotPathMiddleware (sessions, CSRF, Django auth,
# OTP, messages, frame options, django-prometheus' per-view metrics, django-axes, django-ratelimit's):
# stateless JSON reads other services call on every request they serve (issue 18).
HOT_PATH_PREFIXES = ("/api/v1/entitlements", "/internal/v1/entitlements/", "/internal/v1/users/")


class HotPathMiddleware:
    """On HOT_PATH_PREFIXES, call the view straight away, skipping the middleware below this one.

    Only what Django's handler would do for these views is done: resolve, call, render (DRF's
    responses are template responses). A path that does not resolve goes down the whole stack as
    usual (404s, APPEND_SLASH). Their requests are still timed (RequestDurationMiddleware), carry
    a request id and answer problem+json (above this one), and get the security headers.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(HOT_PATH_PREFIXES):
            return self.get_response(request)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        if callable(getattr(response, "render", None)):
            response = response.render()
        return response
