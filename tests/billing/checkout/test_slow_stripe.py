"""A Stripe that stops answering never takes the web tier down: each request's Stripe calls end by its
budget, a few permits per process cap how many threads Stripe can hold, the breaker opens on timeouts,
and what timed out is finished by the sweep with the same idempotency key."""

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from django.conf import settings

from billing.models import Order, Price
from billing.services import orders_resolve_abandoned
from tests.support.auth import bearer
from tests.support.server import gunicorn
from tests.support.stripe_events import signed, stripe_event
from tests.support.stripe_fake import STRIPE_KEY, StripeFake
from tests.support.worker import purge

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

UNLIMITED = {f"RATE_LIMIT_{group}": "100000/m" for group in ("CHECKOUT", "API_READ", "WEBHOOK")}


def call(request: urllib.request.Request) -> tuple[int, dict[str, str], Any, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own loopback server
            status, headers, body = response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, dict(error.headers), json.loads(error.read())
    return status, headers, body, time.monotonic() - started


def entitlements(base: str) -> float:
    user = uuid.uuid4()  # a new caller each time: the check reads the database, then fills the cache
    request = urllib.request.Request(f"{base}/api/v1/entitlements", headers={"Authorization": bearer(user)})  # noqa: S310
    status, _, _, seconds = call(request)
    assert status == 200
    return seconds


def webhook(base: str) -> float:
    body = json.dumps(stripe_event("test.effect", {"id": f"obj_{uuid.uuid4().hex[:12]}"})).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": signed(body)}
    request = urllib.request.Request(f"{base}/webhooks/stripe/", data=body, headers=headers)  # noqa: S310
    status, _, _, seconds = call(request)
    assert status == 200
    return seconds


def checkout(base: str, price: Price) -> tuple[int, dict[str, str], Any, float]:
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    request = urllib.request.Request(  # noqa: S310
        f"{base}/api/v1/checkout/sessions",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": bearer(uuid.uuid4(), email="buyer@example.com"),
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    return call(request)


def traffic(base: str, duration: float) -> int:
    """Entitlement checks and webhook deliveries, one after the other, for `duration` seconds; each answers 200."""
    answered = 0
    until = time.monotonic() + duration
    while time.monotonic() < until:
        entitlements(base)
        webhook(base)
        answered += 2
    return answered


def test_with_stripe_hung_checkouts_answer_503_in_budget_while_reads_and_webhooks_are_served(
    stripe_fake: StripeFake, price: Price
) -> None:
    budget = settings.STRIPE_REQUEST_BUDGET_SECONDS
    threads = 4
    answers: list[tuple[int, dict[str, str], Any, float]] = []
    with gunicorn(threads=threads, STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_BASE=stripe_fake.base, **UNLIMITED) as base:
        traffic(base, 1)  # warm up

        stripe_fake.proxy.stall()  # Stripe accepts connections and never answers
        try:
            # As many checkouts at once as the server has threads: the bulkhead lets two of them wait on Stripe
            # and turns the others away at once, so reads and webhooks still find a thread. Without it every
            # thread would wait out the budget and the reads below would be answered only after the checkouts.
            burst = [threading.Thread(target=lambda: answers.append(checkout(base, price))) for _ in range(threads)]
            for thread in burst:
                thread.start()
            while len(answers) < threads - settings.STRIPE_WEB_CONCURRENCY:
                time.sleep(0.01)
            assert all("Too many Stripe calls" in body["detail"] for _, _, body, _ in answers)
            served = traffic(base, 0.5)
            assert len(answers) == threads - settings.STRIPE_WEB_CONCURRENCY  # still waiting on Stripe
            for thread in burst:
                thread.join()

            # Clients that keep buying, a quarter second after each answer, while reads and webhooks go on.
            stop = threading.Event()

            def shopper() -> None:
                while not stop.is_set():
                    answers.append(checkout(base, price))
                    time.sleep(0.25)

            shoppers = [threading.Thread(target=shopper) for _ in range(threads)]
            for thread in shoppers:
                thread.start()
            served += traffic(base, 14)
            stop.set()
            for thread in shoppers:
                thread.join()
        finally:
            stripe_fake.proxy.resume()
    purge(["webhooks"])
    print(f"{served} reads and webhooks answered and {len(answers)} checkouts while Stripe was hung")

    # every checkout answered 503 problem+json with Retry-After, within the budget
    assert {status for status, *_ in answers} == {503}
    assert all(headers["Content-Type"] == "application/problem+json" for _, headers, _, _ in answers)
    assert all(int(headers["Retry-After"]) > 0 for _, headers, _, _ in answers)
    assert max(seconds for *_, seconds in answers) < budget + 2
    codes = [body["type"].rsplit(":", 1)[1] for _, _, body, _ in answers]
    assert "stripe_timeout" in codes  # the calls that got a permit ran out of budget
    details = [body["detail"] for _, _, body, _ in answers]
    assert any("Too many Stripe calls" in detail for detail in details)  # the bulkhead turned the others away
    assert any("circuit breaker open" in detail for detail in details)  # and the timeouts opened the breaker

    # the orders that timed out are left pending, and the sweep finishes them with their own idempotency keys
    timed_out = list(Order.objects.filter(status=Order.Status.PENDING))
    assert len(timed_out) == codes.count("stripe_timeout")
    assert not Order.objects.filter(status=Order.Status.FAILED, failure_code="stripe_timeout").exists()
    time.sleep(settings.STRIPE_BREAKER_RESET_SECONDS)  # the breaker lets a probe through
    while orders_resolve_abandoned():
        pass
    assert {order.status for order in Order.objects.filter(id__in=[o.id for o in timed_out])} == {Order.Status.OPEN}
    keys = {request.idempotency_key for request in stripe_fake.sent("POST /v1/checkout/sessions")}
    assert {f"order:{order.id}" for order in timed_out} <= keys
