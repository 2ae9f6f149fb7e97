"""Stripe's statuses become ours in one place, which the webhook services and reconciliation share."""

import typing
from typing import Any

import pytest
import stripe

from billing import stripe_objects as so
from billing.errors import StripeObjectInvalid

DECLINED = {"code": "card_declined", "decline_code": "generic_decline", "message": "Your card was declined."}
# Every PaymentIntent status Stripe documents, with what it means for our payment.
PAYMENT_INTENT_STATUSES: list[tuple[str, dict[str, Any] | None, str]] = [
    ("requires_payment_method", None, "pending"),  # no attempt yet
    ("requires_payment_method", DECLINED, "failed"),  # an attempt failed: Stripe asks for another method
    ("requires_confirmation", None, "pending"),
    ("requires_action", None, "pending"),
    ("processing", None, "pending"),
    ("requires_capture", None, "pending"),
    ("canceled", None, "canceled"),
    ("succeeded", None, "succeeded"),
]


@pytest.mark.parametrize(("status", "last_payment_error", "ours"), PAYMENT_INTENT_STATUSES)
def test_each_documented_payment_intent_status_means_one_payment_status(
    status: str, last_payment_error: dict[str, Any] | None, ours: str
) -> None:
    intent = {"id": "pi_1", "status": status, "last_payment_error": last_payment_error}

    assert so.payment_intent_status(intent) == ours


def test_the_table_covers_every_payment_intent_status_the_stripe_sdk_declares() -> None:
    # PaymentIntent.status is annotated Union[Literal[<the documented statuses>], str].
    declared = typing.get_args(typing.get_args(stripe.PaymentIntent.__annotations__["status"])[0])

    assert set(declared) == {status for status, _, _ in PAYMENT_INTENT_STATUSES}


@pytest.mark.parametrize("status", ["requires_source", "exploded", None])
def test_a_payment_intent_status_stripe_does_not_document_is_bad_data_not_a_pending_payment(
    status: str | None,
) -> None:
    # requires_source is the name API versions before 2019-02-11 gave requires_payment_method.
    with pytest.raises(StripeObjectInvalid, match="payment intent status"):
        so.payment_intent_status({"id": "pi_1", "status": status})
