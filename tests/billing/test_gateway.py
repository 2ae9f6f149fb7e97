"""The gateway's own promises, against localstripe (the operations the webhook and reconciliation
engineers build on) and the rules every call obeys."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pybreaker
import pytest
import redis
import stripe
from django.db import transaction
from prometheus_client import REGISTRY

from billing import gateway
from billing.errors import StripeNotConfigured, StripeRequestFailed, StripeUnavailable
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)


def calls(operation: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("payments_stripe_calls_total", {"operation": operation, "outcome": outcome}) or 0.0


def test_the_gateway_refuses_to_call_stripe_inside_a_transaction(stripe_fake: StripeFake) -> None:
    with pytest.raises(RuntimeError, match="inside a database transaction"), transaction.atomic():
        gateway.event_list(limit=1)


def test_without_an_api_key_every_call_is_stripe_not_configured(settings: Any) -> None:
    settings.STRIPE_API_KEY = ""
    before = calls("charge_retrieve", "not_configured")

    with pytest.raises(StripeNotConfigured) as raised:
        gateway.charge_retrieve("ch_1")

    assert raised.value.status_code == 503
    assert calls("charge_retrieve", "not_configured") == before + 1


def test_results_are_plain_dicts_as_stripe_sent_them(stripe_fake: StripeFake, stripe_sdk: stripe.StripeClient) -> None:
    customer = gateway.customer_create(email="a@example.com", user_id=str(uuid.uuid4()), customer_id=str(uuid.uuid4()))

    assert type(customer) is dict
    assert customer["object"] == "customer"
    assert type(customer["metadata"]) is dict


def test_the_same_customer_create_is_sent_with_the_same_idempotency_key(stripe_fake: StripeFake) -> None:
    # POSTs carry our key: a retry or replay of the same logical call is recognisable at Stripe.
    for _ in range(2):
        gateway.customer_create(email="", user_id="u", customer_id="c-1")

    seen = [request.idempotency_key for request in stripe_fake.sent("POST /v1/customers")]
    assert seen == ["customer-create:c-1", "customer-create:c-1"]


def test_deleting_a_customer_and_reading_events_work_against_stripe(
    stripe_fake: StripeFake, stripe_sdk: stripe.StripeClient
) -> None:
    customer = stripe_sdk.v1.customers.create(params={"email": "gone@example.com"})

    deleted = gateway.customer_delete(customer.id)
    page = gateway.event_list(limit=100)

    assert deleted == {"id": customer.id, "object": "customer", "deleted": True}
    assert any(event["type"] == "customer.created" for event in page["data"])
    assert set(page) >= {"data", "has_more"}


def test_reading_a_missing_object_is_a_refused_request_and_counted(stripe_fake: StripeFake) -> None:
    before = calls("payment_intent_retrieve", "refused")

    with pytest.raises(StripeRequestFailed):
        gateway.payment_intent_retrieve("pi_missing")

    assert calls("payment_intent_retrieve", "refused") == before + 1


@pytest.fixture
def egress_proxy() -> Iterator[tuple[str, list[str]]]:
    """An HTTP proxy on the way out: records the request lines it gets and answers each as Stripe would."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(f"{self.requestline} {self.headers['Idempotency-Key']}")
            body = json.dumps({"id": "cus_via_proxy", "object": "customer", "metadata": {}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_stripe_calls_go_through_the_proxy_the_environment_names(
    settings: Any, monkeypatch: pytest.MonkeyPatch, egress_proxy: tuple[str, list[str]]
) -> None:
    proxy, seen = egress_proxy
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    settings.STRIPE_API_KEY = "sk_test_proxied"
    settings.STRIPE_API_BASE = "http://api.stripe.invalid"  # reachable only through the proxy

    customer = gateway.customer_create(email="", user_id="u", customer_id="c-proxied")

    assert customer == {"id": "cus_via_proxy", "object": "customer", "metadata": {}}
    assert seen == ["POST http://api.stripe.invalid/v1/customers HTTP/1.1 customer-create:c-proxied"]


@pytest.fixture
def other_process_breaker(settings: Any) -> pybreaker.CircuitBreaker:
    """The Stripe breaker as another process's gateway holds it: pybreaker on the same Redis keys."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=gateway._breaker_namespace())
    return pybreaker.CircuitBreaker(reset_timeout=settings.STRIPE_BREAKER_RESET_SECONDS, state_storage=storage)


def test_a_breaker_another_process_opens_is_seen_once_the_closed_state_read_here_is_old(
    stripe_fake: StripeFake, settings: Any, other_process_breaker: pybreaker.CircuitBreaker
) -> None:
    settings.STRIPE_BREAKER_RESET_SECONDS = 30
    settings.STRIPE_BREAKER_CLOSED_MEMORY_SECONDS = 1.0
    gateway.customer_create(email="", user_id="u", customer_id="c-1")  # reads the breaker: closed, no failure

    other_process_breaker.open()
    gateway.customer_create(email="", user_id="u", customer_id="c-2")  # closed, as read just now: Stripe is called
    time.sleep(settings.STRIPE_BREAKER_CLOSED_MEMORY_SECONDS)

    started = time.monotonic()
    with pytest.raises(StripeUnavailable, match="circuit breaker"):
        gateway.customer_create(email="", user_id="u", customer_id="c-3")
    assert time.monotonic() - started < 0.5
    assert [request.idempotency_key for request in stripe_fake.sent("POST /v1/customers")] == [
        "customer-create:c-1",
        "customer-create:c-2",
    ]


def test_after_a_failure_the_next_call_reads_the_breaker_again(
    stripe_fake: StripeFake, settings: Any, other_process_breaker: pybreaker.CircuitBreaker
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_BREAKER_RESET_SECONDS = 30
    settings.STRIPE_BREAKER_CLOSED_MEMORY_SECONDS = 60.0  # the closed state read here would be trusted all test
    gateway.customer_create(email="", user_id="u", customer_id="c-1")
    stripe_fake.fail_next("POST /v1/customers", 500, {"type": "api_error", "message": "Something went wrong"})
    with pytest.raises(StripeUnavailable):
        gateway.customer_create(email="", user_id="u", customer_id="c-2")
    assert other_process_breaker.fail_counter == 1  # counted in Redis, for every process

    other_process_breaker.open()

    with pytest.raises(StripeUnavailable, match="circuit breaker"):
        gateway.customer_create(email="", user_id="u", customer_id="c-3")
    assert len(stripe_fake.sent("POST /v1/customers")) == 2
