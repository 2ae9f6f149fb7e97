"""The hot routes (HotPathMiddleware's: the entitlement checks, Stripe's webhook deliveries) answered at the
WSGI level, without Django's handler around them: about a third of a remembered check's CPU was the handler
itself (request signals and their dispatch, the per-thread urlconf, the middleware chain's wrapping), and a
fifth of a webhook delivery's (issues 17 and 18)."""

import inspect
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import sentry_sdk
import sentry_sdk.utils
import structlog
from django.conf import settings
from django.core.cache import close_caches
from django.core.cache.backends.base import BaseCache
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler, get_path_info, get_script_name
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.urls import ResolverMatch, set_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

from entitlements.api.views import CHECK_HEADERS, entitlement_check, entitlement_check_from_memory
from payments_project.errors import ApplicationError
from payments_project.middleware import HotPathMiddleware, hot_route, request_id_bound
from payments_project.request_timing import own_duration_observed

log = structlog.get_logger(__name__)

_HOT_PATH_MIDDLEWARE = f"{HotPathMiddleware.__module__}.{HotPathMiddleware.__qualname__}"
_DJANGO_CALL = inspect.unwrap(WSGIHandler.__call__)  # Django's own, whatever wraps it


def _wrapped_by() -> str | None:
    """What wraps Django's WSGIHandler.__call__: None (nothing), "sentry" (Sentry's DjangoIntegration
    alone, from its first initialisation on: its wrapper takes Django's name, so it is told by the file
    its code is in) or "other"."""
    call = WSGIHandler.__call__
    if call is _DJANGO_CALL and call.__module__ == WSGIHandler.__module__:
        return None
    if getattr(call, "__wrapped__", None) is _DJANGO_CALL and call.__code__.co_filename == sentry_sdk.utils.__file__:
        return "sentry"
    return "other"


class FromMemory(NamedTuple):
    """A hot view's answer from this process's memory alone: its body, or None (the view answers)."""

    answer: Callable[..., bytes | None]
    headers: tuple[tuple[str, str], ...]  # the view's own, in its order


# The views with such an answer, by view function: the cached entitlement check, which other services call
# on every request they serve (issue 18): building the request's response and passing it through the
# middleware chain cost as much CPU as the check.
FROM_MEMORY = {entitlement_check: FromMemory(entitlement_check_from_memory, CHECK_HEADERS)}

_closing: tuple[object, bool] | None = None  # (settings.CACHES, whether a backend of it has a close())


def _close_caches() -> None:
    """close_caches (request_finished's receiver), skipped when no configured backend closes anything:
    BaseCache.close does nothing, and Django's Redis and local-memory caches keep it; listing the
    initialized caches of the request's context cost more than the rest of the check's teardown."""
    global _closing
    configured = settings.CACHES
    if _closing is None or _closing[0] is not configured:  # override_settings puts another dict in place
        backends = (import_string(cache["BACKEND"]) for cache in configured.values())
        _closing = (configured, any(backend.close is not BaseCache.close for backend in backends))
    if _closing[1]:
        close_caches()


class HotPathApplication:
    """The project's WSGI application: a request on a hot route goes through HotPathMiddleware's chain as
    Django's handler would send it there, doing for it what the handler does that matters; anything else
    (another path, one that does not resolve) goes to Django's handler, unchanged.

    What the handler does and this does too: the script prefix; `request_started`'s and `request_finished`'s
    receivers that have an effect with DEBUG off (close_old_connections: a connection that broke or outlived
    CONN_MAX_AGE is closed, and the next request's first query checks its health; close_caches); any
    exception becomes the response Django's handler would make of it; a 4xx or 5xx is logged by
    `django.request`; the request's files are closed. Not done: the per-thread urlconf (the default one is
    already in force) and reset_queries (queries are logged only under DEBUG). A view in FROM_MEMORY (the
    cached entitlement check) is first asked for its answer from this process's memory alone: sent
    without the chain (see _from_memory), and without close_old_connections, since it made no query.

    With Sentry on, what its DjangoIntegration adds to Django's handler is kept: the request runs inside
    its WSGI middleware (the request's scope and data, its trace, an exception that escapes), and the
    response is got through BaseHandler.get_response, which the integration wraps (the transaction's
    name and the request's data on every event); exceptions are reported as in Django's handler, by its
    patched response_for_exception and the got_request_exception signal. What reaches Sentry is scrubbed
    by payments_project.logging's before_send, as for any other request.
    """

    def __init__(self, handler: WSGIHandler) -> None:
        self.handler = handler
        self._hot = HotPathMiddleware(cast(Callable[[HttpRequest], HttpResponse], handler.get_response))  # respond only
        self._respond = cast(Callable[[HttpRequest], HttpResponse], convert_exception_to_response(self._hot.respond))
        self._sentry_handler = BaseHandler()  # its get_response around ours: see _sentry_call
        self._sentry_handler._middleware_chain = self._respond  # type: ignore[attr-defined]
        # Skip the handler only where it would do nothing more: not when something else than Sentry wraps
        # it or runs before HotPathMiddleware in it (OpenTelemetry's DjangoInstrumentor puts its
        # middleware first), nor under DEBUG.
        self.enabled = (
            not settings.DEBUG and list(settings.MIDDLEWARE[:1]) == [_HOT_PATH_MIDDLEWARE] and _wrapped_by() != "other"
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = hot_route(get_path_info(environ) or "/") if self.enabled else None
        if match is None:
            return cast(Iterable[bytes], self.handler(environ, start_response))
        if WSGIHandler.__call__ is not _DJANGO_CALL:  # wrapped since (Sentry initialised), or at the start
            wrapped_by = _wrapped_by()
            if wrapped_by == "other":
                return cast(Iterable[bytes], self.handler(environ, start_response))
            # Sentry's wrapper calls Django's alone while its integration is off (not initialised again).
            integration = sentry_sdk.get_client().get_integration(DjangoIntegration)
            if integration is not None:
                return self._sentry_call(environ, start_response, match, integration)
        return self._call(environ, start_response, match)

    def _sentry_call(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        match: ResolverMatch,
        integration: DjangoIntegration,
    ) -> Iterable[bytes]:
        """As the integration's patched WSGIHandler.__call__ and BaseHandler.get_response (which also
        logs a 4xx or 5xx, as our own path does)."""

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            return self._call(environ, start_response, match, sentry=True)

        middleware = SentryWsgiMiddleware(
            app,
            settings.USE_X_FORWARDED_HOST,
            span_origin=DjangoIntegration.origin,
            http_methods_to_capture=integration.http_methods_to_capture,
        )
        return cast(Iterable[bytes], middleware(environ, start_response))

    def _from_memory(self, request: HttpRequest, match: ResolverMatch) -> tuple[list[tuple[str, str]], bytes] | None:
        """The 200 of a view with an answer from this process's memory alone (FROM_MEMORY), made without a
        response object or the middleware chain: the chain's headers (request id, Server-Timing, security
        headers, Content-Length) and metrics (own duration, responses by status) added here, as the chain
        adds them. None: the view had no such answer (it made no query, counted nothing) and the chain
        answers, with the request id bound here. No query, so no close_old_connections around it: to the
        database this request is as an idle thread's time, and Django closes nothing then either.
        Under Sentry every request goes through the chain (its scope, transaction and events)."""
        memory = FROM_MEMORY.get(match.func)
        if memory is None or request.META.get("CONTENT_LENGTH") or self._hot.redirects(request):
            return None  # a body: the chain's size limit decides
        started = time.perf_counter()
        request_id = request_id_bound(request)
        try:
            body = memory.answer(request, *match.args, **match.kwargs)
        except ApplicationError:  # one of ours: the view answers its problem
            body = None
        except Exception:  # the view, through the chain, answers it as it would have; said, not hidden
            log.exception("hot_path_answer_from_memory_failed", view=match.view_name)
            body = None
        if body is None:
            request.META["HTTP_X_REQUEST_ID"] = request_id  # the chain binds the same id
            return None
        timing = own_duration_observed(match.view_name, time.perf_counter() - started)
        self._hot.count(request, 200)
        request.close()
        _close_caches()  # request_finished
        headers = [
            *memory.headers,
            ("X-Request-ID", request_id),
            ("Server-Timing", timing),
            *self._hot.security_headers(request),
            ("Content-Length", str(len(body))),
        ]
        return headers, body

    def _call(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        match: ResolverMatch,
        *,
        sentry: bool = False,
    ) -> Iterable[bytes]:
        set_script_prefix(get_script_name(environ))
        request = self.handler.request_class(environ)
        request.resolver_match = match
        if not sentry and (answer := self._from_memory(request, match)) is not None:
            start_response("200 OK", answer[0])
            return [answer[1]]
        close_old_connections()  # request_started
        try:
            response = (
                cast(HttpResponse, self._sentry_handler.get_response(request)) if sentry else self._respond(request)
            )
            if response.status_code >= 400 and not sentry:  # BaseHandler.get_response logs it itself
                log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
            body = response.content  # the hot views' responses are never streamed
        finally:
            request.close()
            close_old_connections()  # request_finished, before the body is sent: it is all in memory
            _close_caches()
        headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [body]
