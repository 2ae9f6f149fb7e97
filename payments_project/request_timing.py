"""How long we take to answer a request, less the time spent waiting for Stripe: what the latency SLOs
(README, "Service level objectives") measure, per view. And the request's Stripe budget: the moment by
which its Stripe calls must be done (settings.STRIPE_REQUEST_BUDGET_SECONDS; billing.gateway enforces it)."""

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import Histogram

OWN_DURATION = Histogram(
    "payments_http_request_own_duration_seconds",
    "Time to answer a request, less the time its Stripe calls took, by view",
    ["view"],
    # 0.05 and 1: the entitlement-check and checkout objectives
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
)

# Each view's child of OWN_DURATION: labels() validates and looks it up under a lock, per request otherwise.
# Bounded: one per view name (and "unresolved").
_own_duration: dict[str, Any] = {}

# Seconds this request has waited for Stripe so far (billing.gateway adds each call's time).
_stripe_seconds: ContextVar[list[float] | None] = ContextVar("stripe_seconds", default=None)
# When (time.monotonic()) the request being served must be done with Stripe; None outside a request.
_stripe_deadline: ContextVar[float | None] = ContextVar("stripe_deadline", default=None)


def stripe_deadline() -> float | None:
    """The current request's Stripe deadline (time.monotonic()), or None outside a web request."""
    return _stripe_deadline.get()


def stripe_time_add(seconds: float) -> None:
    """Count a Stripe call's time against the request being served (if any)."""
    spent = _stripe_seconds.get()
    if spent is not None:
        spent[0] += seconds


def own_duration_observed(view: str, own: float) -> str:
    """Observe a request's own seconds for its view; the same figure for the caller (and the benchmark):
    the value of its RFC 8673 Server-Timing header, in milliseconds."""
    child = _own_duration.get(view)
    if child is None:
        child = _own_duration.setdefault(view, OWN_DURATION.labels(view))
    child.observe(own)
    return f"app;dur={own * 1000:.2f}"


class RequestDurationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        spent = [0.0]
        token = _stripe_seconds.set(spent)
        deadline = _stripe_deadline.set(time.monotonic() + settings.STRIPE_REQUEST_BUDGET_SECONDS)
        started = time.perf_counter()
        response = None
        try:
            response = self.get_response(request)
            return response
        finally:
            own = max(0.0, time.perf_counter() - started - spent[0])
            _stripe_seconds.reset(token)
            _stripe_deadline.reset(deadline)
            match = request.resolver_match  # unresolved paths share one label: their number is unbounded
            timing = own_duration_observed(match.view_name if match else "unresolved", own)
            if response is not None:
                response["Server-Timing"] = timing
