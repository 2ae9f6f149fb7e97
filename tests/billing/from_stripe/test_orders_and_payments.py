"""Checkout sessions, payment intents and invoices applied from Stripe, as the webhook processor calls them."""

import uuid
from typing import Any

import pytest
import stripe

from billing import services
from billing.errors import StripeObjectInvalid
from billing.models import Customer, Order, Payment, Subscription
from gdpr.models import AuditEvent
from tasks.errors import TransientError
from tasks.models import OutboxMessage
from tests.billing.factories import CustomerFactory, OrderFactory
from tests.billing.from_stripe.support import at, events, in_processor
from tests.support.stripe_setup import card_for, confirmed_intent

pytestmark = pytest.mark.django_db(transaction=True)


def session_for(order: Order, **extra: Any) -> dict[str, Any]:
    return {
        "id": order.stripe_session_id,
        "object": "checkout.session",
        "client_reference_id": str(order.id),
        "metadata": {"order_id": str(order.id), "user_id": str(order.customer.user_id)},
        "customer": order.customer.stripe_customer_id,
        "status": "complete",
        **extra,
    }


def test_a_completed_session_completes_its_order_and_records_what_checkout_made() -> None:
    order = OrderFactory(customer__stripe_customer_id=None)
    session = session_for(order, customer="cus_made_by_checkout", subscription="sub_made", payment_intent=None)

    changed = in_processor(services.order_complete_from_stripe, session=session, event_created=at(1))
    again = in_processor(services.order_complete_from_stripe, session=session, event_created=at(1))

    assert changed == {order.customer.user_id}
    assert again == set()
    order.refresh_from_db()
    assert (order.status, order.stripe_subscription_id, order.completed_at) == ("completed", "sub_made", at(1))
    assert Customer.objects.get().stripe_customer_id == "cus_made_by_checkout"


def test_an_expired_session_expires_its_order_but_never_a_completed_one() -> None:
    open_order, completed = OrderFactory(), OrderFactory()
    in_processor(services.order_complete_from_stripe, session=session_for(completed), event_created=at(1))

    in_processor(
        services.order_expire_from_stripe, session=session_for(open_order, status="expired"), event_created=at(2)
    )
    late = in_processor(services.order_expire_from_stripe, session=session_for(completed), event_created=at(3))

    assert Order.objects.get(pk=open_order.pk).status == "expired"
    assert Order.objects.get(pk=completed.pk).status == "completed"
    assert late == set()


def test_a_session_naming_an_order_we_do_not_have_is_a_permanent_error() -> None:
    with pytest.raises(StripeObjectInvalid, match="does not exist"):
        in_processor(
            services.order_complete_from_stripe,
            session={"id": "cs_x", "metadata": {"order_id": str(uuid.uuid4())}},
            event_created=at(1),
        )


def test_a_session_from_elsewhere_is_ignored() -> None:
    assert in_processor(services.order_complete_from_stripe, session={"id": "cs_link"}, event_created=at(1)) == set()


# --- payments ------------------------------------------------------------------------------------


def test_a_succeeded_payment_intent_is_recorded_and_announced(
    stripe_sdk: stripe.StripeClient, stripe_customer: dict[str, Any]
) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    intent = confirmed_intent(stripe_sdk, stripe_customer, 2500)

    changed = in_processor(services.payment_record_from_intent, payment_intent=intent, event_created=at(1))
    again = in_processor(services.payment_record_from_intent, payment_intent=intent, event_created=at(1))

    payment = Payment.objects.get()
    assert changed == {payment.customer.user_id} and again == set()
    assert (payment.amount, payment.currency, payment.status) == (2500, "eur", "succeeded")
    assert payment.stripe_charge_id == intent["latest_charge"]["id"]  # given expanded
    [succeeded] = events("payment.succeeded")
    assert succeeded.data["amount"] == 2500
    assert AuditEvent.objects.filter(action="payment.recorded", target_id=str(payment.id)).count() == 1


def test_a_declined_card_is_a_failed_payment_with_its_decline_code(
    stripe_sdk: stripe.StripeClient, stripe_customer: dict[str, Any]
) -> None:
    declining = card_for(stripe_sdk, stripe_customer["id"], number="4000000000000341")
    with pytest.raises(stripe.StripeError) as declined:
        confirmed_intent(stripe_sdk, {**stripe_customer, "card": declining}, 900)
    charge = stripe_sdk.v1.charges.retrieve(declined.value.json_body["error"]["charge"])
    intent = stripe_sdk.v1.payment_intents.retrieve(charge.payment_intent).to_dict()
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))

    in_processor(services.payment_record_from_intent, payment_intent=intent, event_created=at(1))

    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code) == ("failed", "card_declined")
    assert events("payment.failed")[0].data["failure_code"] == "card_declined"


def test_a_paid_invoice_is_the_subscriptions_payment(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any], stripe_sdk: stripe.StripeClient
) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    in_processor(services.subscription_upsert_from_stripe, stripe_subscription=stripe_subscription, event_created=at(1))
    invoice = stripe_sdk.v1.invoices.retrieve(stripe_subscription["latest_invoice"]).to_dict()

    changed = in_processor(services.payment_record_from_invoice, invoice=invoice, event_created=at(2))

    payment = Payment.objects.get()
    assert changed == {payment.customer.user_id}
    assert (payment.amount, payment.status, payment.stripe_invoice_id) == (499, "succeeded", invoice["id"])
    assert payment.subscription == Subscription.objects.get()
    assert payment.stripe_payment_intent_id == invoice["payment_intent"]

    # The same payment's intent event, later, fills in rather than duplicating.
    intent = stripe_sdk.v1.payment_intents.retrieve(invoice["payment_intent"]).to_dict()
    in_processor(services.payment_record_from_intent, payment_intent=intent, event_created=at(3))
    assert Payment.objects.count() == 1
    assert len(events("payment.succeeded")) == 1


def test_a_failed_invoice_is_a_failed_payment_and_a_later_success_replaces_it() -> None:
    customer = CustomerFactory()
    invoice = {
        "id": "in_1",
        "customer": customer.stripe_customer_id,
        "status": "open",
        "attempted": True,
        "amount_due": 1299,
        "amount_paid": 0,
        "currency": "eur",
        "payment_intent": "pi_1",
    }
    in_processor(services.payment_record_from_invoice, invoice=invoice, event_created=at(1))
    assert Payment.objects.get().status == "failed"

    in_processor(
        services.payment_record_from_invoice,
        invoice={**invoice, "status": "paid", "amount_paid": 1299},
        event_created=at(2),
    )
    stale = in_processor(services.payment_record_from_invoice, invoice=invoice, event_created=at(1))

    assert stale == set()
    assert Payment.objects.get().status == "succeeded"
    assert [m.type for m in OutboxMessage.objects.order_by("id")] == ["payment.failed", "payment.succeeded"]


def test_a_free_invoice_records_no_payment() -> None:
    customer = CustomerFactory()
    invoice = {
        "id": "in_free",
        "customer": customer.stripe_customer_id,
        "status": "paid",
        "amount_paid": 0,
        "currency": "eur",
    }

    assert in_processor(services.payment_record_from_invoice, invoice=invoice, event_created=at(1)) == set()
    assert Payment.objects.count() == 0


def test_an_intent_of_a_customer_we_do_not_know_yet_is_a_transient_error(
    stripe_sdk: stripe.StripeClient, stripe_customer: dict[str, Any]
) -> None:
    intent = stripe_sdk.v1.payment_intents.create(
        params={
            "amount": 100,
            "currency": "eur",
            "customer": stripe_customer["id"],
            "payment_method": stripe_customer["card"],
        }
    ).to_dict()

    with pytest.raises(TransientError, match="not known yet"):
        in_processor(services.payment_record_from_intent, payment_intent=intent, event_created=at(1))


def test_an_intent_naming_nobody_is_a_permanent_error() -> None:
    with pytest.raises(StripeObjectInvalid, match="neither a customer nor a user"):
        in_processor(
            services.payment_record_from_intent,
            payment_intent={"id": "pi_x", "status": "succeeded", "amount": 1, "amount_received": 1, "currency": "eur"},
            event_created=at(1),
        )
