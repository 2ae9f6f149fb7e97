"""The hot routes (HotPathMiddleware's: the entitlement checks, Stripe's webhook deliveries) answered at the
WSGI level, without Django's handler around them: about a third of a remembered check's CPU was the handler
itself (request signals and their dispatch, the per-thread urlconf, the middleware chain's wrapping), and a
fifth of a webhook delivery's (issues 17 and 18)."""

from collections.abc import Callable, Iterable
from typing import Any, cast

from django.conf import settings
from django.core.cache import close_caches
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler, get_path_info, get_script_name
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.urls import set_script_prefix
from django.utils.log import log_response

from payments_project.middleware import HotPathMiddleware, hot_route

_HOT_PATH_MIDDLEWARE = f"{HotPathMiddleware.__module__}.{HotPathMiddleware.__qualname__}"


class HotPathApplication:
    """The project's WSGI application: a request on a hot route goes through HotPathMiddleware's chain as
    Django's handler would send it there, doing for it what the handler does that matters; anything else
    (another path, one that does not resolve) goes to Django's handler, unchanged.

    What the handler does and this does too: the script prefix; `request_started`'s and `request_finished`'s
    receivers that have an effect with DEBUG off (close_old_connections: a connection that broke or outlived
    CONN_MAX_AGE is closed, and the next request's first query checks its health; close_caches); any
    exception becomes the response Django's handler would make of it; a 4xx or 5xx is logged by
    `django.request`; the request's files are closed. Not done: the per-thread urlconf (the default one is
    already in force) and reset_queries (queries are logged only under DEBUG).
    """

    def __init__(self, handler: WSGIHandler) -> None:
        self.handler = handler
        self._hot = HotPathMiddleware(cast(Callable[[HttpRequest], HttpResponse], handler.get_response))  # respond only
        self._respond = cast(Callable[[HttpRequest], HttpResponse], convert_exception_to_response(self._hot.respond))
        # Skip the handler only where it would do nothing more: not when something wraps it (Sentry's
        # DjangoIntegration patches WSGIHandler.__call__) or runs before HotPathMiddleware in it
        # (OpenTelemetry's DjangoInstrumentor puts its middleware first), nor under DEBUG.
        self.enabled = (
            not settings.DEBUG
            and list(settings.MIDDLEWARE[:1]) == [_HOT_PATH_MIDDLEWARE]
            and WSGIHandler.__call__.__module__ == WSGIHandler.__module__
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = hot_route(get_path_info(environ) or "/") if self.enabled else None
        if match is None:
            return cast(Iterable[bytes], self.handler(environ, start_response))
        set_script_prefix(get_script_name(environ))
        close_old_connections()  # request_started
        request = self.handler.request_class(environ)
        request.resolver_match = match
        try:
            response = self._respond(request)
            if response.status_code >= 400:
                log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
            body = response.content  # the hot views' responses are never streamed
        finally:
            request.close()
            close_old_connections()  # request_finished, before the body is sent: it is all in memory
            close_caches()
        headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [body]
