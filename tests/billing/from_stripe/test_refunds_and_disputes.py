"""Refunds and disputes applied from Stripe charges, and why these services are not durable."""

from typing import Any

import pytest
import stripe
from django.db import transaction

from billing import gateway, services
from billing.models import Payment, Refund
from tasks.errors import TransientError
from tests.billing.from_stripe.support import at, events, in_processor
from tests.support.stripe_setup import confirmed_intent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def paid(stripe_sdk: stripe.StripeClient, stripe_customer: dict[str, Any]) -> Payment:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    intent = confirmed_intent(stripe_sdk, stripe_customer, 5000)
    in_processor(services.payment_record_from_intent, payment_intent=intent, event_created=at(1))
    return Payment.objects.get()


def test_a_refund_made_in_the_dashboard_is_recorded_from_the_charge(
    paid: Payment, stripe_sdk: stripe.StripeClient
) -> None:
    stripe_sdk.v1.refunds.create(params={"charge": paid.stripe_charge_id, "amount": 1200})
    charge = gateway.charge_retrieve(paid.stripe_charge_id or "")

    changed = in_processor(services.refund_record_from_charge, charge=charge, event_created=at(5))
    again = in_processor(services.refund_record_from_charge, charge=charge, event_created=at(5))

    assert changed == {paid.customer.user_id} and again == set()
    paid.refresh_from_db()
    assert paid.refunded_amount == 1200
    refund = Refund.objects.get()
    assert (refund.amount, refund.status, refund.requested_by, refund.reason) == (1200, "succeeded", "stripe", "other")
    [announced] = events("refund.succeeded")
    assert announced.data["payment_refunded_amount"] == 1200


def test_a_charge_without_its_refund_list_still_moves_the_refunded_amount(paid: Payment) -> None:
    charge = {
        "id": paid.stripe_charge_id,
        "amount": 5000,
        "amount_refunded": 700,
        "payment_intent": paid.stripe_payment_intent_id,
    }

    in_processor(services.refund_record_from_charge, charge=charge, event_created=at(5))

    paid.refresh_from_db()
    assert paid.refunded_amount == 700


def test_a_charge_of_a_payment_not_recorded_yet_is_a_transient_error() -> None:
    with pytest.raises(TransientError):
        in_processor(
            services.refund_record_from_charge, charge={"id": "ch_unknown", "amount_refunded": 1}, event_created=at(1)
        )


def test_a_dispute_marks_the_payment_disputed_and_it_stays_so(paid: Payment) -> None:
    dispute = {
        "id": "dp_1",
        "charge": paid.stripe_charge_id,
        "reason": "fraudulent",
        "status": "needs_response",
        "amount": 5000,
        "currency": "eur",
    }

    changed = in_processor(services.dispute_record_from_stripe, dispute=dispute, event_created=at(5))
    replayed_success = in_processor(
        services.payment_record_from_intent,
        payment_intent={
            "id": paid.stripe_payment_intent_id,
            "customer": paid.customer.stripe_customer_id,
            "status": "succeeded",
            "amount": 5000,
            "amount_received": 5000,
            "currency": "eur",
        },
        event_created=at(6),
    )

    assert changed == {paid.customer.user_id}
    assert replayed_success == set()
    paid.refresh_from_db()
    assert (paid.status, paid.dispute_reason) == ("disputed", "fraudulent")


def test_services_are_not_durable_so_the_processor_can_wrap_them(paid: Payment) -> None:
    # One processor transaction may apply several objects; a failure rolls all of them back.
    with pytest.raises(RuntimeError), transaction.atomic():
        services.dispute_record_from_stripe(
            dispute={
                "id": "dp_2",
                "charge": paid.stripe_charge_id,
                "status": "needs_response",
                "amount": 1,
                "currency": "eur",
            },
            event_created=at(9),
        )
        raise RuntimeError("the processor failed later on")

    paid.refresh_from_db()
    assert paid.status == "succeeded"
