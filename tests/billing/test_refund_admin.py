"""Refunds in admin: a form parsed strictly in the payment's currency, a confirmation page, then Stripe;
the refund list with its filters and searches; the sweep that settles refunds stuck in `requested`."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from django.test import Client
from django.utils import timezone

from billing import services
from billing.errors import StripeUnavailable
from billing.models import Payment, Refund
from billing.tasks import refunds_resolve_stuck_task
from gdpr.models import AuditEvent
from payments_project.celery import app as celery_app
from tests.billing.factories import CustomerFactory, PaymentFactory, RefundFactory
from tests.support.auth import staff_client
from tests.support.stripe_fake import StripeFake

PAYMENTS = "/admin/billing/payment/"
REFUNDS = "/admin/billing/refund/"


@pytest.fixture
def finance() -> Client:
    return staff_client("anna", "finance")


@pytest.fixture
def support() -> Client:
    return staff_client("sam", "support")


def refund_page(payment: Payment) -> str:
    return f"{PAYMENTS}{payment.id}/refund/"


def review(client: Client, payment: Payment, amount: str, **form: str) -> Any:
    """Fill in the refund form and submit it: the answer is the confirmation page (or the form again)."""
    key = client.get(refund_page(payment)).context["form"].initial["idempotency_key"]
    fields = {"step": "review", "amount": amount, "reason": "requested_by_customer", "idempotency_key": key, **form}
    return client.post(refund_page(payment), fields)


def confirm(client: Client, payment: Payment, page: Any) -> Any:
    """Press "Yes, refund" on a confirmation page: post back exactly what it carries."""
    return client.post(refund_page(payment), {**page.context["confirm"].initial, "step": "confirm"})


# --- the form, the confirmation, Stripe ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_finance_refunds_part_of_a_payment_after_a_confirmation_page(
    finance: Client, payment: Payment, stripe_sdk: stripe.StripeClient
) -> None:
    page = review(finance, payment, "12.99", reason="duplicate", note="charged twice")

    assert page.status_code == 200
    text = page.content.decode()
    assert "12.99 EUR" in text and "(EUR)" in text  # the parsed amount and its currency
    assert "37.01 EUR" in text  # what is left to refund afterwards
    assert payment.customer.email in text or str(payment.customer.user_id) in text
    assert Refund.objects.count() == 0  # the confirmation page refunds nothing

    done = confirm(finance, payment, page)

    assert done.status_code == 302
    assert done["Location"] == f"{REFUNDS}?payment__id__exact={payment.id}"
    refund = Refund.objects.get()
    assert (refund.amount, refund.reason, refund.note, refund.status, refund.requested_by) == (
        1299,
        "duplicate",
        "charged twice",
        "succeeded",
        "anna",
    )
    assert stripe_sdk.v1.charges.retrieve(payment.stripe_charge_id or "").amount_refunded == 1299
    assert AuditEvent.objects.filter(action="refund.requested", actor_type="staff", actor_id="anna").exists()
    assert str(refund.id) in finance.get(done["Location"]).content.decode()  # it is in the refund list

    # The confirmation posted twice (a double click, a reload) refunds once.
    confirm(finance, payment, page)
    assert Refund.objects.count() == 1
    assert stripe_sdk.v1.charges.retrieve(payment.stripe_charge_id or "").amount_refunded == 1299


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("12,99", "use a dot for decimals"),  # read as 1,299.00 before: a 100x refund
        ("1,299.00", "use a dot for decimals"),
        ("1.234", "more decimals than EUR allows"),
        ("1e3", "is not an amount in EUR"),
        ("-5", "is not an amount in EUR"),
        ("0", "A refund is a positive amount"),
        ("50.01", "Only 50.00 EUR is left to refund"),
    ],
)
def test_an_amount_that_is_not_exact_in_the_currency_is_refused_on_the_form(
    finance: Client, typed: str, message: str
) -> None:
    payment = PaymentFactory(amount=5000)

    page = review(finance, payment, typed)

    assert page.status_code == 200
    assert page.context["confirm"] is None  # still the form, not the confirmation
    assert message in page.content.decode()
    assert Refund.objects.count() == 0


@pytest.mark.django_db
def test_a_zero_decimal_currency_takes_whole_units_only(finance: Client) -> None:
    payment = PaymentFactory(amount=5000, currency="jpy")

    assert "1,299 JPY" in review(finance, payment, "1299").content.decode()
    assert "more decimals than JPY allows" in review(finance, payment, "12.99").content.decode()


@pytest.mark.django_db
def test_an_empty_amount_means_everything_that_is_left(finance: Client) -> None:
    payment = PaymentFactory(amount=5000, refunded_amount=1250)
    RefundFactory(payment=payment, amount=1250)

    page = review(finance, payment, "")

    assert page.context["confirm"].initial["amount_minor"] == 3750
    assert "37.50 EUR" in page.content.decode()


@pytest.mark.django_db
def test_the_list_action_opens_the_refund_form_of_the_one_selected_payment(finance: Client) -> None:
    payment = PaymentFactory()

    response = finance.post(PAYMENTS, {"action": "refund_payment", "_selected_action": [str(payment.id)]})

    assert response.status_code == 302
    assert response["Location"] == refund_page(payment)
    assert 'id="refund-link"' in finance.get(f"{PAYMENTS}{payment.id}/change/").content.decode()


@pytest.mark.django_db
def test_support_sees_no_refund_action_and_gets_403_posting_one(support: Client) -> None:
    payment = PaymentFactory()

    assert "refund_payment" not in support.get(PAYMENTS).content.decode()
    assert 'id="refund-link"' not in support.get(f"{PAYMENTS}{payment.id}/change/").content.decode()
    action = support.post(PAYMENTS, {"action": "refund_payment", "_selected_action": [str(payment.id)]})
    page = support.get(refund_page(payment))
    confirmed = support.post(
        refund_page(payment),
        {"step": "confirm", "amount_minor": "100", "reason": "other", "idempotency_key": "k"},
    )

    assert (action.status_code, page.status_code, confirmed.status_code) == (403, 403, 403)
    assert Refund.objects.count() == 0


# --- the refund list -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_refund_list_shows_every_refund_and_filters_stuck_ones(support: Client) -> None:
    stuck = RefundFactory(status=Refund.Status.REQUESTED, stripe_refund_id=None, lease_until=timezone.now())
    waiting = RefundFactory(
        status=Refund.Status.REQUESTED, stripe_refund_id=None, lease_until=timezone.now() + timedelta(minutes=1)
    )
    done = RefundFactory(status=Refund.Status.SUCCEEDED)

    everything = support.get(REFUNDS).context["cl"].result_list
    requested = support.get(REFUNDS, {"status__exact": "requested"}).context["cl"].result_list
    only_stuck = support.get(REFUNDS, {"stuck": "yes"}).context["cl"].result_list

    assert set(everything) == {stuck, waiting, done}
    assert set(requested) == {stuck, waiting}
    assert list(only_stuck) == [stuck]


@pytest.mark.django_db
@pytest.mark.parametrize("by", ["payment id", "email", "user id", "stripe refund", "payment intent", "stripe customer"])
def test_refunds_are_found_by_payment_customer_and_stripe_ids(support: Client, by: str) -> None:
    customer = CustomerFactory(email="needle@example.com", stripe_customer_id="cus_needle")
    target = RefundFactory(payment=PaymentFactory(customer=customer, stripe_payment_intent_id="pi_needle"))
    RefundFactory()
    term = {
        "payment id": str(target.payment_id),
        "email": "needle@example.com",
        "user id": str(customer.user_id),
        "stripe refund": target.stripe_refund_id,
        "payment intent": "pi_needle",
        "stripe customer": "cus_needle",
    }[by]

    assert list(support.get(REFUNDS, {"q": term}).context["cl"].result_list) == [target]


@pytest.mark.django_db
def test_refunds_and_payments_filter_by_a_date_range_and_by_date_hierarchy(support: Client) -> None:
    march = RefundFactory(created_at=datetime(2026, 3, 15, tzinfo=UTC))
    RefundFactory(created_at=datetime(2026, 4, 2, tzinfo=UTC))

    ranged = support.get(REFUNDS, {"created_at__range__gte": "2026-03-01", "created_at__range__lte": "2026-03-31"})
    hierarchy = support.get(REFUNDS, {"created_at__year": "2026", "created_at__month": "3"})

    assert list(ranged.context["cl"].result_list) == [march]
    assert list(hierarchy.context["cl"].result_list) == [march]


# --- the sweep -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_sweep_settles_a_refund_stuck_while_stripe_was_down_with_its_original_key(
    payment: Payment, stripe_fake: StripeFake, stripe_sdk: stripe.StripeClient, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_fake.proxy.cut()
    with pytest.raises(StripeUnavailable):
        services.refund_issue(
            payment_id=payment.id, amount=1299, reason="other", requested_by="anna", idempotency_key="form-1"
        )
    stuck = Refund.objects.get()
    assert stuck.status == "requested"
    assert services.refunds_resolve_stuck() == 0  # its lease has not run out: its request may still answer

    stripe_fake.proxy.restore()
    Refund.objects.filter(pk=stuck.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    settled = services.refunds_resolve_stuck()

    stuck.refresh_from_db()
    assert (settled, stuck.status) == (1, "succeeded")
    assert {request.idempotency_key for request in stripe_fake.sent("POST /v1/refunds")} == {f"refund:{stuck.id}"}
    assert stripe_sdk.v1.charges.retrieve(payment.stripe_charge_id or "").amount_refunded == 1299
    assert services.refunds_resolve_stuck() == 0  # nothing left to settle


def test_beat_runs_the_stuck_refund_sweep() -> None:
    schedule = {entry["task"]: entry["schedule"] for entry in celery_app.conf.beat_schedule.values()}

    assert schedule["billing.resolve_stuck_refunds"] == 300.0
    assert refunds_resolve_stuck_task.name == "billing.resolve_stuck_refunds"
