"""Stripe, faked at its HTTP boundary only.

- `localstripe` (a real HTTP server on a free loopback port) where it covers the call: customers,
  legacy plans, payment intents, subscriptions, refunds, events.
- `responses` for what localstripe lacks (Checkout Sessions): `FakeCheckout` answers
  POST /v1/checkout/sessions and lets every other request pass through to localstripe.
"""

import itertools
import json
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
import responses
import stripe
from django.db import transaction
from django.test import Client

from billing import services
from billing.models import Payment
from tests.support.processes import background_process
from tests.support.proxy import TcpProxy, free_port

STRIPE_KEY = "sk_test_jia_billing"


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """A localstripe server for the whole session; its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = Path(__file__).with_name("localstripe_main.py")

    def ready() -> bool:
        request = urllib.request.Request(f"{base}/v1/customers", headers={"Authorization": f"Bearer {STRIPE_KEY}"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=1):  # noqa: S310 - our own loopback fake
            return True

    with background_process([sys.executable, str(script), str(port)], name=f"localstripe-{port}", ready=ready):
        yield base


@pytest.fixture
def stripe_proxy(localstripe: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of localstripe, so a test can take 'Stripe' down and bring it back."""
    port = int(localstripe.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        yield proxy


@pytest.fixture
def stripe_base(settings: Any, stripe_proxy: TcpProxy) -> str:
    """Point the gateway at localstripe (through the proxy), with test-sized retries and breaker."""
    base = f"http://127.0.0.1:{stripe_proxy.port}"
    settings.STRIPE_API_KEY = STRIPE_KEY
    settings.STRIPE_API_BASE = base
    settings.STRIPE_MAX_NETWORK_RETRIES = 1
    settings.STRIPE_CONNECT_TIMEOUT_SECONDS = 2.0
    settings.STRIPE_READ_TIMEOUT_SECONDS = 5.0
    settings.STRIPE_BREAKER_FAIL_MAX = 3
    settings.STRIPE_BREAKER_RESET_SECONDS = 2
    settings.BILLING_IN_FLIGHT_WAIT_SECONDS = 10.0
    return base


@pytest.fixture
def stripe_sdk(localstripe: str) -> stripe.StripeClient:
    """The test's own hands on localstripe (setting up customers, plans, payments) — not the gateway."""
    return stripe.StripeClient(
        STRIPE_KEY, base_addresses={"api": localstripe}, http_client=stripe.RequestsClient(timeout=5)
    )


@dataclass
class FakeCheckout:
    """POST /v1/checkout/sessions as Stripe answers it; scripted failures; every call recorded."""

    base: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    delay: float = 0.0
    on_call: Callable[[dict[str, Any]], None] | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, error: dict[str, Any], *, times: int = 1) -> None:
        self.script += [(status, {"error": error})] * times

    def __call__(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
        params = dict(parse_qsl(body))
        call = {"params": params, "idempotency_key": request.headers.get("Idempotency-Key")}
        with self._lock:
            self.calls.append(call)
            scripted = self.script.pop(0) if self.script else None
        if self.on_call is not None:
            self.on_call(call)
        if self.delay:
            time.sleep(self.delay)
        if scripted is not None:
            status, error = scripted
            return status, {"Request-Id": "req_fake"}, json.dumps(error)
        session_id = f"cs_test_{next(self._ids):06d}{uuid.uuid4().hex[:8]}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "mode": params.get("mode"),
            "status": "open",
            "customer": params.get("customer"),
            "client_reference_id": params.get("client_reference_id"),
            "metadata": {"order_id": params.get("metadata[order_id]"), "user_id": params.get("metadata[user_id]")},
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
        }
        return 200, {"Request-Id": "req_fake"}, json.dumps(session)

    @property
    def sessions_created(self) -> int:
        return len(self.calls)


@pytest.fixture
def fake_checkout(stripe_base: str) -> Iterator[FakeCheckout]:
    fake = FakeCheckout(base=stripe_base)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, f"{stripe_base}/v1/checkout/sessions", callback=fake)
        mock.add_passthru(stripe_base)
        mock.add_passthru("http://127.0.0.1")  # localstripe itself (test set-up) and nothing else
        yield fake


@pytest.fixture
def api() -> Client:
    return Client()


@pytest.fixture
def payment(stripe_sdk: stripe.StripeClient, stripe_base: str) -> Payment:
    """A 50.00 EUR payment that really happened (in localstripe), recorded from its webhook."""
    user_id = uuid.uuid4()
    customer = stripe_sdk.v1.customers.create(params={"metadata": {"user_id": str(user_id)}}).to_dict()
    card = stripe_sdk.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    stripe_sdk.v1.payment_methods.attach(card.id, params={"customer": customer["id"]})
    intent = stripe_sdk.v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "eur",
            "customer": customer["id"],
            "payment_method": card.id,
            "confirm": True,
        }
    ).to_dict()
    created = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction.atomic():
        services.customer_upsert_from_stripe(stripe_customer=customer, event_created=created)
        services.payment_record_from_intent(payment_intent=intent, event_created=created)
    return Payment.objects.get()
