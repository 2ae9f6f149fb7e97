import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from django.db import IntegrityError, transaction

from billing import services
from billing.errors import PaymentNotRefundable, RefundExceedsPayment, StripeRequestFailed, StripeUnavailable
from billing.models import Payment, Refund
from gdpr.models import AuditEvent
from tasks.models import OutboxMessage
from tests.support.races import race
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)


def refund(payment: Payment, amount: int | None, *, key: str | None = None, **extra: Any) -> Refund:
    return services.refund_issue(
        payment_id=payment.id,
        amount=amount,
        reason=extra.pop("reason", "requested_by_customer"),
        requested_by=extra.pop("requested_by", "finance-anna"),
        idempotency_key=key or uuid.uuid4().hex,
        **extra,
    )


def stripe_refunds(stripe_sdk: stripe.StripeClient, payment: Payment) -> list[dict[str, Any]]:
    charge = stripe_sdk.v1.charges.retrieve(payment.stripe_charge_id or "").to_dict()
    return list(charge["refunds"]["data"])


def test_a_partial_refund_goes_through_stripe_and_is_recorded_audited_and_announced(
    payment: Payment, stripe_sdk: stripe.StripeClient
) -> None:
    done = refund(payment, 1500, reason="duplicate", note="charged twice")

    assert (done.status, done.amount, done.reason, done.note) == ("succeeded", 1500, "duplicate", "charged twice")
    [at_stripe] = stripe_refunds(stripe_sdk, payment)
    assert at_stripe["id"] == done.stripe_refund_id
    assert at_stripe["amount"] == 1500
    assert at_stripe["metadata"] == {"refund_id": str(done.id), "payment_id": str(payment.id), "reason": "duplicate"}
    payment.refresh_from_db()
    assert payment.refunded_amount == 1500
    assert list(
        AuditEvent.objects.filter(target_id=str(done.id))
        .order_by("occurred_at", "id")
        .values_list("action", "actor_id")
    ) == [
        ("refund.requested", "finance-anna"),
        ("refund.succeeded", "stripe"),
    ]
    [event] = OutboxMessage.objects.filter(type="refund.succeeded")
    assert event.subject == f"refund:{done.id}"
    assert event.data["amount"] == 1500


def test_a_full_refund_refunds_what_is_left(payment: Payment, stripe_sdk: stripe.StripeClient) -> None:
    refund(payment, 1000)

    rest = refund(payment, None)

    assert rest.amount == 4000
    payment.refresh_from_db()
    assert payment.refunded_amount == payment.amount == 5000
    assert sorted(r["amount"] for r in stripe_refunds(stripe_sdk, payment)) == [1000, 4000]


def test_a_refund_above_what_is_left_is_refused_and_stripe_is_not_asked(
    payment: Payment, stripe_sdk: stripe.StripeClient
) -> None:
    refund(payment, 4000)

    with pytest.raises(RefundExceedsPayment, match="Only 1000 EUR minor units are left"):
        refund(payment, 1001)

    assert Refund.objects.count() == 1
    assert len(stripe_refunds(stripe_sdk, payment)) == 1


def test_the_same_refund_request_twice_refunds_once(payment: Payment, stripe_sdk: stripe.StripeClient) -> None:
    first = refund(payment, 700, key="admin-form-1")

    second = refund(payment, 700, key="admin-form-1")

    assert second.id == first.id
    assert Refund.objects.count() == 1
    assert len(stripe_refunds(stripe_sdk, payment)) == 1


def test_two_refunds_racing_can_never_exceed_the_payment(payment: Payment, stripe_sdk: stripe.StripeClient) -> None:
    racers = 4

    def take_3000() -> str:
        try:
            refund(payment, 3000)
        except RefundExceedsPayment:
            return "refused"
        return "refunded"

    outcomes = race(*[take_3000] * racers)

    assert sorted(outcomes) == ["refunded"] + ["refused"] * (racers - 1)
    assert [r["amount"] for r in stripe_refunds(stripe_sdk, payment)] == [3000]
    payment.refresh_from_db()
    assert payment.refunded_amount == 3000


def test_a_refund_stripe_refuses_is_failed_and_releases_its_amount(payment: Payment, settings: Any) -> None:
    Payment.objects.filter(pk=payment.pk).update(stripe_charge_id="ch_does_not_exist")
    payment.refresh_from_db()

    with pytest.raises(StripeRequestFailed):
        refund(payment, 5000, key="k")

    failed = Refund.objects.get()
    assert failed.status == "failed"
    assert failed.failure_reason
    assert AuditEvent.objects.filter(action="refund.failed", target_id=str(failed.id)).exists()
    Payment.objects.filter(pk=payment.pk).update(stripe_charge_id=None)  # Stripe finds it by intent now
    assert refund(payment, 5000).status == "succeeded"


def test_when_stripe_is_down_the_refund_stays_reserved_and_the_same_key_finishes_it_later(
    payment: Payment, stripe_fake: StripeFake, stripe_sdk: stripe.StripeClient, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_fake.proxy.cut()
    with pytest.raises(StripeUnavailable):
        refund(payment, 2000, key="form-7")
    reserved = Refund.objects.get()
    assert reserved.status == "requested"
    with pytest.raises(RefundExceedsPayment):  # the reservation still counts
        refund(payment, 3001)

    stripe_fake.proxy.restore()
    Refund.objects.filter(pk=reserved.pk).update(lease_until=None)  # its caller gave up
    finished = refund(payment, 2000, key="form-7")

    assert (finished.id, finished.status) == (reserved.id, "succeeded")
    assert len(stripe_refunds(stripe_sdk, payment)) == 1


def test_our_refund_reported_back_by_the_charge_webhook_is_not_counted_twice(
    payment: Payment, stripe_sdk: stripe.StripeClient
) -> None:
    done = refund(payment, 1200)
    charge = stripe_sdk.v1.charges.retrieve(payment.stripe_charge_id or "").to_dict()

    with transaction.atomic():
        services.refund_record_from_charge(charge=charge, event_created=datetime(2026, 1, 2, tzinfo=UTC))

    assert list(Refund.objects.values_list("id", flat=True)) == [done.id]
    payment.refresh_from_db()
    assert payment.refunded_amount == 1200
    assert OutboxMessage.objects.filter(type="refund.succeeded").count() == 1


def test_a_payment_that_did_not_succeed_cannot_be_refunded(payment: Payment) -> None:
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.DISPUTED)

    with pytest.raises(PaymentNotRefundable):
        refund(payment, 100)
    assert Refund.objects.count() == 0


def test_the_database_itself_refuses_refunded_amounts_above_the_payment(payment: Payment) -> None:
    with pytest.raises(IntegrityError):
        Payment.objects.filter(pk=payment.pk).update(refunded_amount=5001)
