"""Checkout requests that wait, die or are abandoned: the lease, the retry and the sweep finish the order."""

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from billing import services
from billing.models import Order, Price
from tests.billing.checkout.support import SESSIONS, checkout
from tests.billing.factories import OrderFactory
from tests.support.races import race
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_duplicate_that_waits_too_long_for_the_first_request_gets_a_409_to_retry(
    stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.BILLING_IN_FLIGHT_WAIT_SECONDS = 0.2
    stripe_fake.on(SESSIONS, lambda _: time.sleep(1.5))
    user_id = uuid.uuid4()

    def buy(pause: float) -> Any:
        time.sleep(pause)  # the second arrives while the first is talking to Stripe
        return checkout(Client(), user_id, price, key="slow")

    responses = race(lambda: buy(0), lambda: buy(0.3))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409]
    conflict = next(r for r in responses if r.status_code == 409)
    assert conflict.json()["type"].endswith(":request_in_progress")
    assert conflict["Retry-After"]
    assert len(stripe_fake.sent(SESSIONS)) == 1


def test_an_order_whose_request_died_before_stripe_answered_is_finished_by_the_retry(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    fingerprint = services.checkout_fingerprint(
        price_id=price.id, success_url="https://app.example/ok", cancel_url="https://app.example/no"
    )
    orphan = OrderFactory(
        customer__user_id=user_id,
        price=price,
        idempotency_key="key-1",
        request_fingerprint=fingerprint,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() - timedelta(seconds=1),
    )

    response = checkout(api, user_id, price)

    assert response.status_code == 200
    assert response.json()["order_id"] == str(orphan.id)
    assert response.json()["status"] == "open"
    assert [call.idempotency_key for call in stripe_fake.sent(SESSIONS)] == [f"order:{orphan.id}"]


def test_an_order_left_pending_by_a_dead_request_is_settled_by_the_sweep_with_the_same_stripe_key(
    stripe_fake: StripeFake, price: Price
) -> None:
    # given: a request that wrote its order and died before Stripe answered (its lease ran out)
    abandoned = OrderFactory(
        price=price,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    fresh = OrderFactory(
        price=price,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() + timedelta(minutes=1),
    )

    # when
    settled = services.orders_resolve_abandoned()
    again = services.orders_resolve_abandoned()

    # then
    abandoned.refresh_from_db()
    assert (settled, again) == (1, 0)
    assert abandoned.status == Order.Status.OPEN
    assert abandoned.stripe_session_id and abandoned.checkout_url
    assert [call.idempotency_key for call in stripe_fake.sent(SESSIONS)] == [f"order:{abandoned.id}"]
    assert Order.objects.get(id=fresh.id).status == Order.Status.PENDING  # its request is still at work


def test_an_abandoned_order_stripe_refuses_is_failed_with_the_reason(stripe_fake: StripeFake, price: Price) -> None:
    abandoned = OrderFactory(
        price=price,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    stripe_fake.fail_next(SESSIONS, 400, {"type": "invalid_request_error", "message": "No such price"})

    services.orders_resolve_abandoned()

    abandoned.refresh_from_db()
    assert abandoned.status == Order.Status.FAILED
    assert abandoned.failure_message == "Stripe refused the request"  # ours; Stripe's text is logged
