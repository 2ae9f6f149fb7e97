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


def p99(seconds: list[float]) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def traffic(base: str, duration: float) -> tuple[list[float], list[float]]:
    reads, deliveries = [], []
    until = time.monotonic() + duration
    while time.monotonic() < until:
        reads.append(entitlements(base))
        deliveries.append(webhook(base))
    return reads, deliveries


def test_with_stripe_hung_checkouts_answer_503_in_budget_while_reads_and_webhooks_keep_their_latency(
    stripe_fake: StripeFake, price: Price
) -> None:
    budget = settings.STRIPE_REQUEST_BUDGET_SECONDS
    answers: list[tuple[int, dict[str, str], Any, float]] = []
    with gunicorn(threads=4, STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_BASE=stripe_fake.base, **UNLIMITED) as base:
        traffic(base, 2)  # warm up
        normal_reads, normal_deliveries = traffic(base, 6)

        stripe_fake.proxy.stall()  # Stripe accepts connections and never answers
        try:
            stop = threading.Event()

            def shopper() -> None:  # clients that keep buying, a quarter second after each answer
                while not stop.is_set():
                    answers.append(checkout(base, price))
                    time.sleep(0.25)

            shoppers = [threading.Thread(target=shopper) for _ in range(4)]  # as many as the server's threads
            for thread in shoppers:
                thread.start()
            slow_reads, slow_deliveries = traffic(base, 16)
            stop.set()
            for thread in shoppers:
                thread.join()
        finally:
            stripe_fake.proxy.resume()
        # normal again: the baseline brackets the outage (other work on a shared machine comes and goes)
        after_reads, after_deliveries = traffic(base, 6)
    purge(["webhooks"])

    # reads and webhook deliveries kept their latency
    ms = lambda seconds: f"{p99(seconds) * 1000:.1f} ms"  # noqa: E731
    print(
        f"p99 entitlements: {ms(normal_reads)} before, {ms(slow_reads)} with Stripe hung, {ms(after_reads)} after;"
        f" webhooks: {ms(normal_deliveries)}, {ms(slow_deliveries)}, {ms(after_deliveries)}"
        f" ({len(slow_reads)} + {len(slow_deliveries)} requests and {len(answers)} checkouts while hung,"
        f" slowest checkout {max(a[3] for a in answers):.2f} s)"
    )
    floor = 0.05  # on a shared 2-core machine a few ms of noise is not a regression
    assert p99(slow_reads) <= 2 * max(p99(normal_reads), p99(after_reads), floor)
    assert p99(slow_deliveries) <= 2 * max(p99(normal_deliveries), p99(after_deliveries), floor)

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
