"""A refund never hangs on a dependency: past the request's Stripe budget staff get an answer, the amount
stays reserved and the sweep asks Stripe again at once with the refund's own idempotency key; a payment
locked elsewhere is refused on the form within the lock timeout."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from django.db import connection
from django.test import Client

from billing import services
from billing.models import Payment, Refund
from payments_project.settings.parsing import database_config
from tests.billing.checkout.test_database_timeouts import row_locked
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


@pytest.fixture
def web_session_timeouts(settings: Any) -> Iterator[None]:
    """This test's database session gets a web process's timeouts (pytest itself is a `worker`)."""
    options = connection.settings_dict["OPTIONS"]
    kept = options.get("options")
    web = database_config(settings.DATABASE_URL, session_timeouts=settings.DATABASE_SESSION_TIMEOUTS["web"])
    options["options"] = web["OPTIONS"]["options"]
    connection.close()  # the next query connects with them
    try:
        yield
    finally:
        options["options"] = kept
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_refund_of_a_payment_locked_elsewhere_is_refused_on_the_form_within_the_lock_timeout(
    settings: Any, payment: Payment, stripe_fake: StripeFake, web_session_timeouts: None
) -> None:
    finance = staff_client("anna", "finance")
    page = review(finance, payment, "12.99")

    with row_locked(Payment._meta.db_table, payment.id):
        started = time.monotonic()
        answer = confirm(finance, payment, page)
        seconds = time.monotonic() - started

    lock_timeout = settings.DATABASE_SESSION_TIMEOUTS["web"][1]
    print(f"refund of a locked payment answered in {seconds:.2f}s (lock_timeout {lock_timeout}s)")
    assert lock_timeout <= seconds < lock_timeout + 2
    assert answer.status_code == 200
    assert "locked by another operation" in str(answer.context["confirm"].non_field_errors())
    assert not Refund.objects.exists()  # nothing was reserved
    assert stripe_fake.sent("POST /v1/refunds") == []
