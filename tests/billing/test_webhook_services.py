"""The services the webhook processor calls, fed with objects a (local) Stripe really produced."""

import copy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from django.db import transaction

from billing import gateway, services
from billing.errors import StripeObjectInvalid
from billing.models import Customer, Order, Payment, Price, Refund, Subscription
from gdpr.models import AuditEvent
from tasks.errors import TransientError
from tasks.models import OutboxMessage
from tests.billing.factories import CustomerFactory, OrderFactory, PriceFactory
from tests.support.stripe_fake import StripeFake
from tests.support.stripe_setup import card_for, confirmed_intent, customer_with_card, subscription_for

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def in_processor(service: Callable[..., set[uuid.UUID]], **kwargs: Any) -> set[uuid.UUID]:
    """As the webhook processor runs a handler: inside its own transaction."""
    with transaction.atomic():
        return service(**kwargs)


def events(kind: str) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(type=kind).order_by("id"))


@pytest.fixture
def price() -> Price:
    return PriceFactory(stripe_price_id=f"price_basic_{uuid.uuid4().hex[:8]}", plan__code="basic", unit_amount=499)


@pytest.fixture
def stripe_customer(stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake) -> dict[str, Any]:
    """A customer made outside our checkout (the dashboard), naming our user, with a working card."""
    return customer_with_card(stripe_sdk, email="dash@example.com", metadata={"user_id": str(uuid.uuid4())})


@pytest.fixture
def stripe_subscription(
    stripe_sdk: stripe.StripeClient, stripe_customer: dict[str, Any], price: Price
) -> dict[str, Any]:
    created = subscription_for(stripe_sdk, stripe_customer["id"], price)
    return gateway.subscription_retrieve(created)  # what the webhook's re-fetch would get


# --- customers -----------------------------------------------------------------------------------


def test_a_stripe_customer_naming_our_user_becomes_theirs(stripe_customer: dict[str, Any]) -> None:
    user_id = uuid.UUID(stripe_customer["metadata"]["user_id"])

    changed = in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))

    assert changed == {user_id}
    customer = Customer.objects.get(user_id=user_id)
    assert (customer.stripe_customer_id, customer.email) == (stripe_customer["id"], "dash@example.com")
    assert AuditEvent.objects.filter(action="customer.updated", target_id=str(customer.id)).exists()


def test_applying_the_same_customer_twice_changes_nothing_the_second_time(stripe_customer: dict[str, Any]) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))

    assert (
        in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
        == set()
    )
    assert Customer.objects.count() == 1


def test_an_older_customer_version_does_not_overwrite_a_newer_one(stripe_customer: dict[str, Any]) -> None:
    newer = {**stripe_customer, "email": "new@example.com"}
    in_processor(services.customer_upsert_from_stripe, stripe_customer=newer, event_created=at(10))

    changed = in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(5))

    assert changed == set()
    assert Customer.objects.get().email == "new@example.com"


def test_a_stripe_customer_that_names_nobody_is_not_ours(stripe_sdk: stripe.StripeClient) -> None:
    stranger = stripe_sdk.v1.customers.create(params={"email": "x@example.com"}).to_dict()

    assert in_processor(services.customer_upsert_from_stripe, stripe_customer=stranger, event_created=at(0)) == set()
    assert Customer.objects.count() == 0


def test_a_deleted_stripe_customer_is_remembered_once(stripe_customer: dict[str, Any]) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    deleted = {"id": stripe_customer["id"], "object": "customer", "deleted": True}

    first = in_processor(services.customer_delete_from_stripe, stripe_customer=deleted, event_created=at(5))
    second = in_processor(services.customer_upsert_from_stripe, stripe_customer=deleted, event_created=at(5))

    assert first == {uuid.UUID(stripe_customer["metadata"]["user_id"])}
    assert second == set()
    assert Customer.objects.get().stripe_deleted_at == at(5)
    assert AuditEvent.objects.filter(action="customer.deleted").count() == 1


# --- subscriptions -------------------------------------------------------------------------------


def test_a_subscription_of_a_dashboard_customer_counts_without_our_checkout(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any], price: Price
) -> None:
    user_id = uuid.UUID(stripe_customer["metadata"]["user_id"])
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))

    changed = in_processor(
        services.subscription_upsert_from_stripe, stripe_subscription=stripe_subscription, event_created=at(1)
    )

    assert changed == {user_id}
    subscription = Subscription.objects.get()
    assert subscription.customer.user_id == user_id
    assert (subscription.plan, subscription.status, subscription.cancel_at_period_end) == (price.plan, "active", False)
    assert subscription.current_period_end == datetime.fromtimestamp(stripe_subscription["current_period_end"], tz=UTC)
    [activated] = events("subscription.activated")
    assert activated.subject == f"subscription:{subscription.id}"
    assert activated.data["user_id"] == str(user_id)
    assert activated.data["plan"] == "basic"


def test_an_expanded_customer_naming_the_user_is_enough(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any]
) -> None:
    expanded = {**stripe_subscription, "customer": {k: v for k, v in stripe_customer.items() if k != "card"}}

    changed = in_processor(services.subscription_upsert_from_stripe, stripe_subscription=expanded, event_created=at(1))

    assert changed == {uuid.UUID(stripe_customer["metadata"]["user_id"])}
    assert Customer.objects.get().stripe_customer_id == stripe_customer["id"]


def test_applying_the_same_subscription_twice_changes_nothing_the_second_time(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any]
) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    in_processor(services.subscription_upsert_from_stripe, stripe_subscription=stripe_subscription, event_created=at(1))
    before = OutboxMessage.objects.count()

    again = in_processor(
        services.subscription_upsert_from_stripe, stripe_subscription=stripe_subscription, event_created=at(1)
    )

    assert again == set()
    assert OutboxMessage.objects.count() == before


def test_a_stale_subscription_version_is_ignored(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any], stripe_sdk: stripe.StripeClient
) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    stripe_sdk.v1.subscriptions.update(stripe_subscription["id"], params={"cancel_at_period_end": True})
    newer = gateway.subscription_retrieve(stripe_subscription["id"])
    in_processor(services.subscription_upsert_from_stripe, stripe_subscription=newer, event_created=at(20))

    # The creation event arrives late, after the update.
    changed = in_processor(
        services.subscription_upsert_from_stripe, stripe_subscription=stripe_subscription, event_created=at(10)
    )

    assert changed == set()
    assert Subscription.objects.get().cancel_at_period_end is True


def test_updates_and_the_end_of_a_subscription_are_announced(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any], stripe_sdk: stripe.StripeClient
) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    in_processor(services.subscription_upsert_from_stripe, stripe_subscription=stripe_subscription, event_created=at(1))
    stripe_sdk.v1.subscriptions.update(stripe_subscription["id"], params={"cancel_at_period_end": True})
    in_processor(
        services.subscription_upsert_from_stripe,
        stripe_subscription=gateway.subscription_retrieve(stripe_subscription["id"]),
        event_created=at(2),
    )
    ended = stripe_sdk.v1.subscriptions.cancel(stripe_subscription["id"]).to_dict()

    in_processor(services.subscription_upsert_from_stripe, stripe_subscription=ended, event_created=at(3))

    assert [m.type for m in OutboxMessage.objects.order_by("id")] == [
        "subscription.activated",
        "subscription.updated",
        "subscription.canceled",
    ]
    assert Subscription.objects.get().status == "canceled"


def test_the_current_api_shape_with_price_and_periods_on_the_item_is_read_too(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any], price: Price
) -> None:
    modern = copy.deepcopy(stripe_subscription)
    item = modern["items"]["data"][0]
    item["price"] = {"id": item.pop("plan")["id"], "object": "price"}
    item["current_period_start"] = modern.pop("current_period_start")
    item["current_period_end"] = modern.pop("current_period_end")
    modern.pop("plan", None)
    modern["metadata"] = {"user_id": stripe_customer["metadata"]["user_id"]}

    in_processor(services.subscription_upsert_from_stripe, stripe_subscription=modern, event_created=at(1))

    subscription = Subscription.objects.get()
    assert subscription.price == price
    assert subscription.current_period_end == datetime.fromtimestamp(item["current_period_end"], tz=UTC)


def test_a_subscription_whose_customer_is_not_known_yet_is_a_transient_error(
    stripe_subscription: dict[str, Any],
) -> None:
    with pytest.raises(TransientError, match="not known yet"):
        in_processor(
            services.subscription_upsert_from_stripe, stripe_subscription=stripe_subscription, event_created=at(1)
        )
    assert Subscription.objects.count() == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("id"), "has no id"),
        (lambda s: s.update(status="exploded"), "unknown status"),
        (lambda s: (s.pop("plan", None), s["items"]["data"][0].pop("plan")), "has no price"),
        (lambda s: s["items"]["data"][0].update(plan={"id": "price_nobody_sells"}), "not in our catalog"),
    ],
)
def test_a_subscription_lacking_what_we_need_is_a_permanent_error(
    stripe_subscription: dict[str, Any], stripe_customer: dict[str, Any], mutate: Any, message: str
) -> None:
    in_processor(services.customer_upsert_from_stripe, stripe_customer=stripe_customer, event_created=at(0))
    bad = copy.deepcopy(stripe_subscription)
    bad.pop("plan", None)  # keep only the item's price, so a mutation of it counts
    mutate(bad)

    with pytest.raises(StripeObjectInvalid, match=message):
        in_processor(services.subscription_upsert_from_stripe, stripe_subscription=bad, event_created=at(1))
    assert Subscription.objects.count() == 0


# --- checkout sessions ---------------------------------------------------------------------------


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


# --- refunds and disputes ------------------------------------------------------------------------


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
    dispute = {"id": "dp_1", "charge": paid.stripe_charge_id, "reason": "fraudulent", "status": "needs_response"}

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
            dispute={"id": "dp_2", "charge": paid.stripe_charge_id}, event_created=at(9)
        )
        raise RuntimeError("the processor failed later on")

    paid.refresh_from_db()
    assert paid.status == "succeeded"
