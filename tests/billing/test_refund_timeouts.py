"""A refund whose Stripe call runs past the request's budget: staff get an answer within the budget, the
amount stays reserved, and the sweep asks Stripe again at once with the refund's own idempotency key."""

import time

import pytest
import stripe
from django.test import Client

from billing import services
from billing.models import Payment, Refund
from tests.billing.test_refund_admin import confirm, review
from tests.support.auth import staff_client
from tests.support.stripe_fake import StripeFake


@pytest.mark.django_db(transaction=True)
def test_a_refund_past_the_stripe_budget_answers_in_time_and_the_sweep_finishes_it_once(
    settings: pytest.FixtureRequest, payment: Payment, stripe_fake: StripeFake, stripe_sdk: stripe.StripeClient
) -> None:
    settings.STRIPE_REQUEST_BUDGET_SECONDS = 1.0  # type: ignore[attr-defined]
    finance: Client = staff_client("anna", "finance")
    page = review(finance, payment, "12.99")

    stripe_fake.proxy.stall()  # Stripe accepts the connection and never answers
    try:
        started = time.monotonic()
        answer = confirm(finance, payment, page)
        seconds = time.monotonic() - started
    finally:
        # The hung request never reaches Stripe (localstripe ignores idempotency keys, real Stripe would not).
        stripe_fake.proxy.cut()
        stripe_fake.proxy.resume()
        stripe_fake.proxy.restore()

    print(f"refund with Stripe hung answered in {seconds:.2f}s (budget 1 s)")
    assert seconds < 1.0 + 2  # the budget, and stripe's short backoff before it gives up
    assert answer.status_code == 200
    assert "Stripe did not answer" in str(answer.context["confirm"].non_field_errors())  # for staff to retry
    refund = Refund.objects.get()
    assert refund.status == Refund.Status.REQUESTED  # the amount stays reserved: Stripe may have done it

    assert services.refunds_resolve_stuck() == 1  # at once: nobody holds its lease any more

    assert Refund.objects.get().status == Refund.Status.SUCCEEDED
    assert stripe_sdk.v1.charges.retrieve(payment.stripe_charge_id or "").amount_refunded == 1299
    sent = stripe_fake.sent("POST /v1/refunds")
    assert len(sent) == 2
    assert {r.idempotency_key for r in sent} == {f"refund:{refund.id}"}  # the same key, asked twice
