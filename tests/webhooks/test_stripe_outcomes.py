"""Every outcome Stripe can send, through the whole pipeline: a signed delivery, a real worker processing it,
and what the user (API, entitlements) and other services (the broker) notice; late, older versions change
nothing."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from billing.models import Dispute, Order, Price
from tests.billing.factories import OrderFactory, PriceFactory
from tests.entitlements.conftest import as_user
from tests.entitlements.factories import plan_with
from tests.support.broker import EventsConsumer
from tests.support.stripe_events import delivery, stripe_event
from tests.support.worker import celery_worker, wait_until
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DONE = (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED, WebhookEvent.Status.DEAD)


@pytest.fixture(scope="module")
def worker(django_db_setup: None, django_db_blocker: Any) -> Iterator[subprocess.Popen[bytes]]:
    with django_db_blocker.unblock(), celery_worker(["webhooks", "outbox"], concurrency=2) as process:
        yield process


@pytest.fixture
def consumer() -> Iterator[EventsConsumer]:
    events = EventsConsumer()
    yield events
    events.close()


@pytest.fixture
def price() -> Price:
    return PriceFactory(plan=plan_with(["hd"]), stripe_price_id=f"price_{uuid.uuid4().hex[:12]}", unit_amount=1299)


class Stripe:
    """One customer's side of Stripe: objects as Stripe shapes them, events signed and delivered in order
    (each a second after the last, so their versions order them), each processed by the worker."""

    def __init__(self, client: Client, price: Price) -> None:
        self.client, self.price = client, price
        self.user_id = uuid.uuid4()
        self.customer = f"cus_{uuid.uuid4().hex[:14]}"
        self.clock = int(time.time()) - 600
        self.period_start = int(time.time()) - 86400

    def send(self, event_type: str, obj: dict[str, Any], *, created: int | None = None) -> WebhookEvent:
        if created is None:
            self.clock += 1
        event = stripe_event(event_type, obj, created=created or self.clock)
        assert self.client.post("/webhooks/stripe/", **delivery(event)).status_code == 200
        assert wait_until(lambda: WebhookEvent.objects.filter(event_id=event["id"], status__in=DONE).exists())
        row = WebhookEvent.objects.get(event_id=event["id"])
        assert row.status == WebhookEvent.Status.PROCESSED, row.last_error
        return row

    def subscription(self, status: str, sub_id: str = "sub_1", **fields: Any) -> dict[str, Any]:
        return {
            "id": sub_id,
            "object": "subscription",
            "customer": self.customer,
            "status": status,
            "cancel_at_period_end": False,
            "metadata": {"user_id": str(self.user_id)},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{sub_id}",
                        "price": {"id": self.price.stripe_price_id},
                        "current_period_start": self.period_start,
                        "current_period_end": self.period_start + 30 * 86400,
                    }
                ],
            },
            **fields,
        }

    def invoice(self, status: str, invoice_id: str = "in_1", **fields: Any) -> dict[str, Any]:
        paid = status == "paid"
        return {
            "id": invoice_id,
            "object": "invoice",
            "customer": self.customer,
            "subscription": "sub_1",
            "metadata": {"user_id": str(self.user_id)},
            "number": None if status == "draft" else "JIA-0001",
            "status": status,
            "amount_due": 1299,
            "amount_paid": 1299 if paid else 0,
            "attempted": status != "draft",
            "currency": "eur",
            "created": self.clock,
            "hosted_invoice_url": None if status == "draft" else f"https://invoice.stripe.com/i/{invoice_id}",
            "payment_intent": f"pi_{invoice_id}",
            "charge": f"ch_{invoice_id}" if paid else None,
            **fields,
        }

    def get(self, path: str) -> Any:
        response = self.client.get(path, **as_user(self.user_id))
        assert response.status_code == 200, response.content
        return response.json()

    def entitled(self) -> bool:
        return bool(self.get("/api/v1/entitlements/hd")["entitled"])


@pytest.fixture
def stripe(client: Client, price: Price, worker: subprocess.Popen[bytes]) -> Stripe:
    return Stripe(client, price)


def published(consumer: EventsConsumer, kinds: set[str], *, at_least: int = 1) -> list[str]:
    """The domain events of these kinds on the broker, once `at_least` arrived (and a moment more, so a
    duplicate would have arrived too)."""

    def found() -> list[str]:
        return [body["type"] for body in consumer.bodies() if body["type"] in kinds]

    deadline = time.monotonic() + 20
    while len(found()) < at_least and time.monotonic() < deadline:
        consumer.drain(expect=len(consumer.received) + 1, timeout=0.5, settle=0)
    consumer.drain(expect=len(consumer.received) + 1000, timeout=2)
    return found()


# --- invoices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "status", "expected"),
    [
        ("invoice.created", "draft", "draft"),
        ("invoice.finalized", "open", "open"),
        ("invoice.updated", "open", "open"),
        ("invoice.paid", "paid", "paid"),
        ("invoice.payment_succeeded", "paid", "paid"),  # the older API versions' name
        ("invoice.payment_failed", "open", "open"),
        ("invoice.voided", "void", "void"),
        ("invoice.marked_uncollectible", "uncollectible", "uncollectible"),
    ],
)
def test_each_invoice_event_shows_the_invoice_to_its_owner_only(
    stripe: Stripe, client: Client, event_type: str, status: str, expected: str
) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))

    stripe.send(event_type, stripe.invoice(status))

    [invoice] = stripe.get("/api/v1/invoices")
    assert invoice["status"] == expected
    assert (invoice["amount_due"], invoice["currency"]) == (1299, "eur")
    assert invoice["amount_paid"] == (1299 if expected == "paid" else 0)
    assert invoice["hosted_invoice_url"] == (None if expected == "draft" else "https://invoice.stripe.com/i/in_1")
    assert client.get("/api/v1/invoices", **as_user(uuid.uuid4())).json() == []


def test_an_invoice_follows_its_lifecycle_and_a_late_older_version_changes_nothing(stripe: Stripe) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))
    stripe.send("invoice.created", stripe.invoice("draft"))
    stripe.send("invoice.finalized", stripe.invoice("open"))
    paid_at = stripe.clock + 1
    stripe.send("invoice.paid", stripe.invoice("paid"))

    stripe.send("invoice.updated", stripe.invoice("open"), created=paid_at - 1)  # delivered late

    [invoice] = stripe.get("/api/v1/invoices")
    assert (invoice["status"], invoice["number"], invoice["amount_paid"]) == ("paid", "JIA-0001", 1299)
    [payment] = stripe.get("/api/v1/payments")
    assert (payment["status"], payment["amount"]) == ("succeeded", 1299)


def test_invoices_are_listed_newest_first(stripe: Stripe) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))
    stripe.send("invoice.paid", stripe.invoice("paid", "in_first", created=stripe.clock - 86400))
    stripe.send("invoice.created", stripe.invoice("draft", "in_second"))

    assert [i["status"] for i in stripe.get("/api/v1/invoices")] == ["draft", "paid"]


# --- 3-D Secure on a renewal ---------------------------------------------------------------------


def test_a_payment_needing_action_shows_on_the_subscription_with_the_invoice_url_until_paid(
    stripe: Stripe, consumer: EventsConsumer
) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))

    stripe.send("invoice.payment_action_required", stripe.invoice("open"))

    [subscription] = stripe.get("/api/v1/subscriptions")
    assert subscription["requires_action"] is True
    assert subscription["action_url"] == "https://invoice.stripe.com/i/in_1"
    assert published(consumer, {"subscription.payment_action_required"}) == ["subscription.payment_action_required"]
    [announced] = [b for b in consumer.bodies() if b["type"] == "subscription.payment_action_required"]
    assert announced["data"]["hosted_invoice_url"] == "https://invoice.stripe.com/i/in_1"

    stripe.send("invoice.paid", stripe.invoice("paid"))

    [subscription] = stripe.get("/api/v1/subscriptions")
    assert (subscription["requires_action"], subscription["action_url"]) == (False, None)


def test_a_late_action_required_for_an_invoice_already_paid_changes_nothing(stripe: Stripe) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))
    stripe.send("invoice.paid", stripe.invoice("paid"))

    stripe.send("invoice.payment_action_required", stripe.invoice("open"), created=stripe.clock - 1)

    [subscription] = stripe.get("/api/v1/subscriptions")
    assert subscription["requires_action"] is False
    assert stripe.get("/api/v1/invoices")[0]["status"] == "paid"


# --- bank debits through Checkout ----------------------------------------------------------------


def bank_debit_order(stripe: Stripe) -> tuple[Order, dict[str, Any]]:
    order = OrderFactory(
        customer__user_id=stripe.user_id, customer__stripe_customer_id=stripe.customer, price=stripe.price
    )
    session = {
        "id": order.stripe_session_id,
        "object": "checkout.session",
        "mode": "subscription",
        "client_reference_id": str(order.id),
        "metadata": {"order_id": str(order.id), "user_id": str(stripe.user_id)},
        "customer": stripe.customer,
        "subscription": "sub_1",
        "invoice": "in_1",
        "payment_intent": None,
        "amount_total": 1299,
        "currency": "eur",
        "status": "complete",
        "payment_status": "unpaid",
    }
    return order, session


def test_a_bank_debit_grants_nothing_until_its_money_arrives(stripe: Stripe, consumer: EventsConsumer) -> None:
    order, session = bank_debit_order(stripe)
    # Stripe keeps the subscription incomplete while its first payment is processing.
    stripe.send("customer.subscription.created", stripe.subscription("incomplete"))
    stripe.send("checkout.session.completed", session)

    assert stripe.get(f"/api/v1/orders/{order.id}")["status"] == "processing"
    assert [p["status"] for p in stripe.get("/api/v1/payments")] == ["pending"]
    assert not stripe.entitled()

    stripe.send("checkout.session.async_payment_succeeded", {**session, "payment_status": "paid"})
    stripe.send("customer.subscription.updated", stripe.subscription("active"))

    assert stripe.get(f"/api/v1/orders/{order.id}")["status"] == "completed"
    assert [p["status"] for p in stripe.get("/api/v1/payments")] == ["succeeded"]
    assert stripe.entitled()
    assert published(consumer, {"payment.succeeded"}) == ["payment.succeeded"]


def test_a_failed_bank_debit_fails_the_order_and_its_payment_and_grants_nothing(
    stripe: Stripe, consumer: EventsConsumer
) -> None:
    order, session = bank_debit_order(stripe)
    stripe.send("customer.subscription.created", stripe.subscription("incomplete"))
    stripe.send("checkout.session.completed", session)

    stripe.send("checkout.session.async_payment_failed", session)
    stripe.send("checkout.session.completed", session, created=stripe.clock - 1)  # a late redelivery

    assert stripe.get(f"/api/v1/orders/{order.id}")["status"] == "failed"
    assert [p["status"] for p in stripe.get("/api/v1/payments")] == ["failed"]
    assert not stripe.entitled()
    assert published(consumer, {"payment.failed"}) == ["payment.failed"]


# --- disputes ------------------------------------------------------------------------------------


def dispute(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "dp_1",
        "object": "dispute",
        "charge": "ch_in_1",
        "payment_intent": "pi_in_1",
        "amount": 1299,
        "currency": "eur",
        "reason": "fraudulent",
        "status": status,
        "evidence_details": {"due_by": int(time.time()) + 7 * 86400},
        "created": int(time.time()),
        **fields,
    }


def test_a_dispute_marks_the_payment_disputed_and_a_lost_one_records_the_reversal(
    stripe: Stripe, consumer: EventsConsumer
) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))
    stripe.send("invoice.paid", stripe.invoice("paid"))

    stripe.send("charge.dispute.created", dispute("needs_response"))

    assert [p["status"] for p in stripe.get("/api/v1/payments")] == ["disputed"]
    stripe.send("charge.dispute.closed", dispute("lost"))

    assert [p["status"] for p in stripe.get("/api/v1/payments")] == ["disputed"]
    lost = Dispute.objects.get()
    assert (lost.status, lost.reversed_amount, lost.closed_at is not None) == ("lost", 1299, True)
    kinds = {"payment.disputed", "payment.dispute_closed"}
    assert published(consumer, kinds, at_least=2) == ["payment.disputed", "payment.dispute_closed"]
    closed = next(b for b in consumer.bodies() if b["type"] == "payment.dispute_closed")
    assert (closed["data"]["status"], closed["data"]["reversed_amount"]) == ("lost", 1299)


def test_a_won_dispute_gives_the_payment_back_and_a_late_created_event_changes_nothing(stripe: Stripe) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))
    stripe.send("invoice.paid", stripe.invoice("paid"))
    stripe.send("charge.dispute.created", dispute("needs_response"))
    stripe.send("charge.dispute.updated", dispute("under_review"))
    stripe.send("charge.dispute.closed", dispute("won"))

    stripe.send("charge.dispute.created", dispute("needs_response"), created=stripe.clock - 5)  # delivered late

    assert [p["status"] for p in stripe.get("/api/v1/payments")] == ["succeeded"]
    won = Dispute.objects.get()
    assert (won.status, won.reversed_amount) == ("won", 0)


# --- trials --------------------------------------------------------------------------------------


def test_a_trial_grants_access_and_its_coming_end_is_announced_once(stripe: Stripe, consumer: EventsConsumer) -> None:
    trial_end = int(time.time()) + 3 * 86400
    trialing = stripe.subscription("trialing", trial_end=trial_end)

    stripe.send("customer.subscription.created", trialing)
    assert stripe.entitled()
    assert stripe.get("/api/v1/subscriptions")[0]["status"] == "trialing"

    stripe.send("customer.subscription.trial_will_end", trialing)
    stripe.send("customer.subscription.trial_will_end", trialing)  # Stripe sent it twice

    assert published(consumer, {"subscription.trial_will_end"}) == ["subscription.trial_will_end"]
    [announced] = [b for b in consumer.bodies() if b["type"] == "subscription.trial_will_end"]
    assert announced["data"]["user_id"] == str(stripe.user_id)


def test_a_late_trial_will_end_after_the_trial_ended_announces_nothing(
    stripe: Stripe, consumer: EventsConsumer
) -> None:
    trial_end = int(time.time()) - 60
    stripe.send("customer.subscription.created", stripe.subscription("trialing", trial_end=trial_end))
    stripe.send("customer.subscription.updated", stripe.subscription("active", trial_end=trial_end))

    stripe.send(
        "customer.subscription.trial_will_end",
        stripe.subscription("trialing", trial_end=trial_end),
        created=stripe.clock - 1,
    )

    assert stripe.get("/api/v1/subscriptions")[0]["status"] == "active"
    assert published(consumer, {"subscription.trial_will_end"}, at_least=0) == []


# --- past_due and unpaid -------------------------------------------------------------------------


def test_past_due_keeps_access_through_the_grace_period_and_unpaid_ends_it(stripe: Stripe, settings: Any) -> None:
    settings.ENTITLEMENTS_PAST_DUE_GRACE_DAYS = 7  # the unpaid period began a day ago
    stripe.send("customer.subscription.created", stripe.subscription("active"))

    stripe.send("customer.subscription.updated", stripe.subscription("past_due"))
    assert stripe.get("/api/v1/subscriptions")[0]["status"] == "past_due"
    assert stripe.entitled()

    stripe.send("customer.subscription.updated", stripe.subscription("unpaid"))
    assert stripe.get("/api/v1/subscriptions")[0]["status"] == "unpaid"
    assert not stripe.entitled()


def test_past_due_beyond_the_grace_period_the_setting_decides_grants_nothing(stripe: Stripe, settings: Any) -> None:
    settings.ENTITLEMENTS_PAST_DUE_GRACE_DAYS = 0
    stripe.send("customer.subscription.created", stripe.subscription("active"))
    assert stripe.entitled()

    stripe.send("customer.subscription.updated", stripe.subscription("past_due"))

    assert not stripe.entitled()


def test_invoice_events_of_the_same_second_processed_in_any_order_leave_it_paid(stripe: Stripe) -> None:
    stripe.send("customer.subscription.created", stripe.subscription("active"))
    second = stripe.clock + 1

    stripe.send("invoice.paid", stripe.invoice("paid"), created=second)
    stripe.send("invoice.finalized", stripe.invoice("open"), created=second)
    stripe.send("invoice.created", stripe.invoice("draft"), created=second)

    [invoice] = stripe.get("/api/v1/invoices")
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", 1299)
