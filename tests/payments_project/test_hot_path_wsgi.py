"""The hot routes are answered before Django's handler (payments_project.hot_path), through the real WSGI
application gunicorn serves, exactly as Django's handler answers them: same statuses, bodies and headers,
same rate limits, same database connection handling, and traced when tracing is on."""

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sentry_sdk
import time_machine
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.test import RequestFactory, override_settings
from django.utils import timezone
from sentry_sdk.integrations.django import DjangoIntegration

from billing.models import Order, Price
from entitlements import selectors
from payments_project.hot_path import HotPathApplication
from payments_project.wsgi import application, django_application
from tests.billing.checkout.support import SESSIONS
from tests.billing.factories import PriceFactory
from tests.entitlements.factories import plan_with, subscribe
from tests.support.auth import bearer
from tests.support.otlp import Traced
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake
from tests.support.worker import wait_until
from webhooks.models import WebhookEvent

# close_old_connections runs as in production (no test transaction around the request to break)
pytestmark = pytest.mark.django_db(transaction=True)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]
REQUEST_ID = "abcdefgh-1234"


def call(app: WSGIApp, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, read as a WSGI server reads them (the iterable closed at the end)."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.update(status=int(status.split()[0]), headers=headers)

    body = app(environ, start_response)
    try:
        content = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return started["status"], dict(started["headers"]), content


def environ(method: str, path: str, **extra: Any) -> dict[str, Any]:
    request = RequestFactory().generic(method, path, HTTP_X_REQUEST_ID=REQUEST_ID, **extra)
    return dict(request.environ)


def answered_alike(make: Callable[[], dict[str, Any]]) -> tuple[int, dict[str, str], bytes]:
    """The answer of the WSGI application and of Django's handler to the same request, asserted equal
    (but for Server-Timing, a duration)."""
    fast, django = call(application, make()), call(django_application, make())
    for answer in (fast, django):
        assert answer[1].pop("Server-Timing").startswith("app;dur=")
    assert fast == django
    return fast


@pytest.fixture
def alice() -> str:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    return bearer(user)


def test_the_wsgi_application_answers_the_hot_routes_before_djangos_handler() -> None:
    assert isinstance(application, HotPathApplication)
    assert application.enabled  # production's middleware and settings: nothing wraps the handler


@pytest.mark.parametrize(
    ("method", "path", "authorized", "status"),
    [
        ("GET", "/api/v1/entitlements/hd", True, 200),
        ("GET", "/api/v1/entitlements/offline", True, 200),
        ("GET", "/api/v1/entitlements/hd", False, 401),
        ("GET", "/api/v1/entitlements/no%20spaces", True, 400),
        ("GET", "/api/v1/entitlements/%C3%A9t%C3%A9", True, 400),  # not latin-1: decoded once, as Django does
        ("POST", "/api/v1/entitlements/hd", True, 405),
        ("OPTIONS", "/api/v1/entitlements/hd", True, 200),
        ("GET", "/api/v1/entitlements/hd/extra/", True, 404),
        ("GET", "/api/v1/entitlements", True, 200),
    ],
)
def test_an_entitlement_check_is_answered_as_djangos_handler_answers_it(
    alice: str, method: str, path: str, authorized: bool, status: int
) -> None:
    headers = {"HTTP_AUTHORIZATION": alice} if authorized else {}

    answer = answered_alike(lambda: environ(method, path, **headers))

    assert answer[0] == status, answer
    assert answer[1]["X-Request-ID"] == REQUEST_ID
    assert answer[1]["X-Content-Type-Options"] == "nosniff"
    if status >= 400:
        assert answer[1]["Content-Type"] == "application/problem+json"


def test_a_refused_token_is_answered_as_djangos_handler_answers_it() -> None:
    answer = answered_alike(lambda: environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION="Bearer not.a.jwt"))

    assert answer[0] == 401
    assert "WWW-Authenticate" in answer[1]


def test_an_entitled_check_says_so(alice: str) -> None:
    status, _, body = call(application, environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=alice))

    assert (status, body) == (200, b'{"feature":"hd","entitled":true}')


def test_the_check_is_still_rate_limited_per_user() -> None:
    alice, bob = bearer(uuid.uuid4()), bearer(uuid.uuid4())

    def check(token: str) -> int:
        return call(application, environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=token))[0]

    with override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "api_read": "3/m"}):
        statuses = [check(alice) for _ in range(4)]
        other = check(bob)

    assert statuses == [200, 200, 200, 429]
    assert other == 200


def remembered(user: uuid.UUID) -> dict[str, Any]:
    """A check of `hd` by the user that this process answers from memory alone, once checks have left the
    user's answer remembered: the first writes it to Redis, the next reads it back and remembers it (unless
    Redis's push of that write lands in between, or the connection told of changes is being remade, as
    after another test's outage: then a later one)."""
    assert sentry_sdk.get_client().get_integration(DjangoIntegration) is None  # else: Sentry's steps, not memory
    check = environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=bearer(user))

    def answered_from_memory() -> bool:
        assert call(application, dict(check))[0] == 200
        return selectors.user_entitled_remembered(user_id=str(user), feature="hd") is not None

    assert wait_until(answered_from_memory, timeout=5, interval=0.05), "the user's answer was never remembered"
    return check


@pytest.fixture
def subscriber() -> uuid.UUID:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    return user


def headers_in_order(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, headers as sent (Server-Timing's duration left out) and body."""
    started: dict[str, Any] = {}
    body = b"".join(app(environ, lambda status, headers: started.update(status=status, headers=headers)))
    assert dict(started["headers"]).get("Server-Timing", "app;dur=").startswith("app;dur=")
    return started["status"], [h if h[0] != "Server-Timing" else (h[0], "") for h in started["headers"]], body


def test_a_check_answered_from_memory_sends_what_djangos_handler_sends(subscriber: uuid.UUID) -> None:
    check = remembered(subscriber)

    fast, django = headers_in_order(application, dict(check)), headers_in_order(django_application, dict(check))

    assert fast == django
    assert fast[0] == "200 OK"
    assert [name for name, _ in fast[1]] == [
        *("Content-Type", "Allow", "X-Request-ID", "Server-Timing"),
        *("X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy", "Content-Length"),
    ]


@override_settings(
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    SECURE_SSL_REDIRECT=True,
    SECURE_HSTS_SECONDS=31536000,
    SECURE_HSTS_INCLUDE_SUBDOMAINS=True,
    SECURE_HSTS_PRELOAD=True,
)
@pytest.mark.parametrize(("scheme", "status"), [("https", "200 OK"), ("http", "301 Moved Permanently")])
def test_with_productions_security_settings_a_check_from_memory_sends_what_djangos_handler_sends(
    subscriber: uuid.UUID, scheme: str, status: str
) -> None:
    handler = WSGIHandler()  # its SecurityMiddleware reads these settings
    hot = HotPathApplication(handler)
    check = {**remembered(subscriber), "HTTP_X_FORWARDED_PROTO": scheme}  # the process's memory: hot's too

    fast, django = headers_in_order(hot, dict(check)), headers_in_order(handler, dict(check))

    assert fast == django
    assert fast[0] == status
    assert ("Strict-Transport-Security" in dict(fast[1])) == (scheme == "https")


def test_a_remembered_check_drf_would_not_answer_in_json_is_answered_as_djangos_handler_answers_it(
    subscriber: uuid.UUID,
) -> None:
    check = remembered(subscriber)

    empty_accept = answered_alike(lambda: {**check, "HTTP_ACCEPT": ""})
    unknown_format = answered_alike(lambda: {**check, "QUERY_STRING": "format=xml"})

    assert (empty_accept[0], unknown_format[0]) == (406, 404)


def test_a_check_refused_by_its_rate_limit_from_memory_is_counted_once() -> None:
    user = uuid.uuid4()
    check = remembered(user)
    with (
        time_machine.travel(timezone.now(), tick=False),  # one rate-limit window throughout
        override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "api_read": "3/h"}),  # every hit reported
    ):
        statuses = [call(application, dict(check))[0] for _ in range(5)]
        window = int(time.time() // 3600)

    assert statuses == [200, 200, 200, 429, 429]
    assert caches["default"].get(f"rl:api_read:3600:user:{user}:{window}") == 5


def test_a_check_answered_from_memory_leaves_the_database_connection_alone(subscriber: uuid.UUID) -> None:
    check = remembered(subscriber)
    connection.ensure_connection()  # past its CONN_MAX_AGE (0 in the test settings)

    status, _, _ = call(application, check)

    # No query, nothing to check or close: as in a thread that serves nothing (Django closes nothing then)
    assert status == 200
    assert connection.connection is not None
    call(application, environ("GET", "/api/v1/entitlements/hd"))  # a 401: through Django's handler's steps
    assert connection.connection is None


def webhook(event_id: str, **overrides: Any) -> dict[str, Any]:
    event = stripe_event("customer.created", {"id": f"cus_{event_id}", "object": "customer"}, id=event_id)
    return environ("POST", "/webhooks/stripe/", **{**delivery(event), **overrides})


def test_a_webhook_delivery_is_stored_and_answered_as_djangos_handler_answers_it() -> None:
    ids = iter(["evt_wsgi_1", "evt_wsgi_2"])  # a new event for each, so that neither is a duplicate

    answer = answered_alike(lambda: webhook(next(ids)))

    assert answer[0] == 200
    assert answer[2] == b'{"received": true, "duplicate": false}'
    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {"evt_wsgi_1", "evt_wsgi_2"}


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"HTTP_STRIPE_SIGNATURE": "t=1,v1=00"}, 400),
        ({"content_type": "text/plain"}, 415),
        ({"CONTENT_LENGTH": str(10 * 1024 * 1024)}, 413),
        ({"REQUEST_METHOD": "GET"}, 405),
    ],
)
def test_a_refused_webhook_delivery_is_answered_as_djangos_handler_answers_it(
    overrides: dict[str, Any], status: int
) -> None:
    answer = answered_alike(lambda: webhook("evt_refused", **overrides))

    assert answer[0] == status, answer
    assert answer[1]["Content-Type"] == "application/problem+json"
    assert not WebhookEvent.objects.exists()


def test_the_database_connection_is_handled_as_djangos_handler_handles_it() -> None:
    # given an open connection past its CONN_MAX_AGE (0 in the test settings)
    connection.ensure_connection()

    # when a check that needs no query is answered (in this thread: the connection is this thread's)
    call(application, environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=bearer(uuid.uuid4())))

    # then it was closed at the end of the request, as request_finished closes it
    assert connection.connection is None


@pytest.fixture
def traced_application(traced: Traced) -> Iterator[WSGIApp]:
    """The WSGI application as payments_project.wsgi builds it in a process that traces."""
    yield HotPathApplication(get_wsgi_application())


def test_with_tracing_on_a_check_goes_through_djangos_handler_and_is_traced(
    traced: Traced, traced_application: HotPathApplication
) -> None:
    status, _, _ = call(
        traced_application, environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=bearer(uuid.uuid4()))
    )

    assert status == 200
    assert not traced_application.enabled
    requests = [span.name for span in traced.spans() if span.name.startswith("GET ")]
    assert requests == ["GET api/v1/entitlements/<str:feature_key>"]


def test_under_debug_every_request_goes_through_djangos_handler() -> None:
    with override_settings(DEBUG=True):
        assert not HotPathApplication(WSGIHandler()).enabled


def checkout_request(token: str, price_id: str, **extra: Any) -> dict[str, Any]:
    body = {"price_id": price_id, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    return environ(
        "POST",
        "/api/v1/checkout/sessions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=token,
        **extra,
    )


def test_a_replayed_checkout_is_answered_as_djangos_handler_answers_it(stripe_fake: StripeFake) -> None:
    price: Price = PriceFactory(stripe_price_id="price_wsgi")
    price_id, token = str(price.id), bearer(uuid.uuid4())
    first = call(application, checkout_request(token, price_id, HTTP_IDEMPOTENCY_KEY="key-1"))

    replay = answered_alike(lambda: checkout_request(token, price_id, HTTP_IDEMPOTENCY_KEY="key-1"))

    assert first[0] == 201, first
    assert replay[0] == 200
    assert json.loads(replay[2]) == json.loads(first[2])
    assert replay[1]["Location"] == first[1]["Location"]
    assert len(stripe_fake.sent(SESSIONS)) == 1


@pytest.mark.parametrize(
    ("token", "extra", "status"),
    [
        (True, {}, 400),  # no Idempotency-Key
        (False, {"HTTP_IDEMPOTENCY_KEY": "key-1"}, 401),
        (True, {"HTTP_IDEMPOTENCY_KEY": "key-1", "CONTENT_TYPE": "text/plain"}, 415),
        (True, {"HTTP_IDEMPOTENCY_KEY": "key-1", "REQUEST_METHOD": "GET"}, 405),
        (True, {"HTTP_IDEMPOTENCY_KEY": "key-1", "CONTENT_LENGTH": str(10 * 1024 * 1024)}, 413),
    ],
)
def test_a_refused_checkout_is_answered_as_djangos_handler_answers_it(
    token: bool, extra: dict[str, Any], status: int
) -> None:
    authorization = bearer(uuid.uuid4()) if token else ""

    answer = answered_alike(lambda: checkout_request(authorization, str(uuid.uuid4()), **extra))

    assert answer[0] == status, answer
    assert answer[1]["Content-Type"] == "application/problem+json"
    assert not Order.objects.exists()


class ClosingCache(LocMemCache):
    """A cache backend with a close() of its own (as memcached's): Django's handler closes it after each
    request."""

    closed = 0

    def close(self, **kwargs: Any) -> None:
        ClosingCache.closed += 1


def test_a_cache_with_a_close_of_its_own_is_closed_after_a_hot_request_as_after_any_other(alice: str) -> None:
    closing = {"BACKEND": f"{__name__}.ClosingCache", "LOCATION": "closing"}
    closed = []
    with override_settings(CACHES={**settings.CACHES, "closing": closing}):
        for app in (application, django_application):
            caches["closing"].get("anything")  # initialized in this context: the request's end closes it
            ClosingCache.closed = 0
            status, _, _ = call(app, environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=alice))
            closed.append((status, ClosingCache.closed))

    assert closed == [(200, 1), (200, 1)]


@pytest.mark.parametrize("authorized", [True, False])
def test_a_hot_answer_carries_its_length_as_commonmiddleware_gives_every_other_route(
    alice: str, authorized: bool
) -> None:
    """Without it gunicorn frames the body in chunks: one more write and TCP segment per answer."""
    headers = {"HTTP_AUTHORIZATION": alice} if authorized else {}

    status, answer_headers, body = call(application, environ("GET", "/api/v1/entitlements/hd", **headers))

    assert status == (200 if authorized else 401)
    assert answer_headers["Content-Length"] == str(len(body))
