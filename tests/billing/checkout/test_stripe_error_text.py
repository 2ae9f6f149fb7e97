"""Stripe's own error text (`No such price: 'price_…'`) never reaches a client, an order or an admin page:
the gateway answers in our words, chosen by Stripe's error code, and logs Stripe's text."""

import logging
import uuid
from typing import Any

import pytest
from django.test import Client

from billing.models import Order, Price, Refund, Subscription
from tests.billing.checkout.support import SESSIONS, checkout
from tests.billing.test_api import ALICE, cancel, live_subscription  # noqa: F401 - a fixture
from tests.billing.test_refund_admin import confirm, review
from tests.support.auth import staff_client
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)

STRIPE_TEXT = "No such price: 'price_secret_internal_1234'"


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(str(record.msg) + record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("status", "error", "expected_status", "our_words"),
    [
        (
            400,
            {"type": "invalid_request_error", "code": "resource_missing", "param": "line_items[0][price]"},
            502,
            "Stripe does not know an object this request refers to",
        ),
        (400, {"type": "invalid_request_error"}, 502, "Stripe refused the request"),
        (401, {"type": "invalid_request_error"}, 502, "Stripe refused our credentials"),
        (
            402,
            {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"},
            402,
            "The card has insufficient funds",
        ),
        (402, {"type": "card_error", "code": "card_declined"}, 402, "The card was declined"),
    ],
)
def test_a_checkout_stripe_refuses_answers_in_our_words_and_logs_stripes(
    api: Client,
    stripe_fake: StripeFake,
    price: Price,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error: dict[str, Any],
    expected_status: int,
    our_words: str,
) -> None:
    stripe_fake.fail_next(SESSIONS, status, {**error, "message": STRIPE_TEXT})
    user_id = uuid.uuid4()

    with caplog.at_level(logging.WARNING):
        response = checkout(api, user_id, price)
    replay = checkout(api, user_id, price)  # the failed order, answered from its stored reason

    assert response.status_code == replay.status_code == expected_status
    for answer in (response, replay):
        assert answer.json()["detail"] == our_words
        assert "price_secret" not in answer.content.decode()
        assert "No such" not in answer.content.decode()
    order = Order.objects.get()
    assert "price_secret" not in order.failure_message
    assert STRIPE_TEXT in _logged(caplog)


def test_a_refund_stripe_refuses_shows_staff_our_words(
    payment: Any, stripe_fake: StripeFake, caplog: pytest.LogCaptureFixture
) -> None:
    finance = staff_client("finance", "finance")
    stripe_fake.fail_next(
        "POST /v1/refunds",
        400,
        {"type": "invalid_request_error", "code": "charge_already_refunded", "message": "Charge ch_9 was refunded."},
    )
    page = review(finance, payment, "10.00")

    with caplog.at_level(logging.WARNING):
        done = confirm(finance, payment, page)
        shown = finance.get(done["Location"]) if done.status_code == 302 else done

    assert "ch_9" not in shown.content.decode()
    refund = Refund.objects.get()
    assert refund.failure_reason == "The payment is already fully refunded at Stripe"
    assert "Charge ch_9 was refunded." in _logged(caplog)


def test_a_cancel_stripe_refuses_answers_in_our_words(
    api: Client,
    live_subscription: Subscription,  # noqa: F811 - tests.billing.test_api's fixture
    stripe_fake: StripeFake,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stripe_fake.fail_next(
        "POST /v1/subscriptions/",
        400,
        {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription: 'sub_x9'"},
    )

    with caplog.at_level(logging.WARNING):
        response = cancel(api, live_subscription.id, ALICE)

    assert response.status_code == 502
    assert response.json()["detail"] == "Stripe does not know an object this request refers to"
    assert "sub_x9" not in response.content.decode()
    assert "No such subscription: 'sub_x9'" in _logged(caplog)
