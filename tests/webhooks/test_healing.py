"""Events that arrive before what they need heal as soon as it lands, not at the next sweep (#17.3)."""

import time
import uuid
from typing import Any

import pytest
from django.core.management import call_command

from billing.models import Subscription
from entitlements.selectors import entitlements_from_database
from tests.billing.factories import FeatureFactory, PriceFactory
from tests.support.stripe_events import inbox_event, stripe_event
from tests.support.stripe_fake import StripeFake
from tests.support.worker import celery_worker, wait_until
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process

pytestmark = pytest.mark.django_db(transaction=True)
USER_ID = uuid.UUID("0190c6a8-2222-7000-8000-000000000002")


@pytest.fixture(autouse=True)
def catalog() -> None:
    price = PriceFactory(stripe_price_id="price_heal_month", plan__code="heal")
    price.plan.features.set([FeatureFactory(key="hd")])


def subscription(customer: str = "cus_heal_1", **fields: Any) -> dict[str, Any]:
    item = {"id": "si_heal", "object": "subscription_item", "price": {"id": "price_heal_month", "object": "price"}}
    period = {"current_period_start": int(time.time()) - 60, "current_period_end": int(time.time()) + 30 * 86400}
    return {
        "id": "sub_heal_1",
        "object": "subscription",
        "customer": customer,  # not expanded, no metadata.user_id: only customer.created names the user
        "status": "active",
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [{**item, **period}]},
        "metadata": {},
        **fields,
    }


def customer_created(customer: str = "cus_heal_1") -> dict[str, Any]:
    # No email: it only links the customer to the user, which changes no billing state, and still heals.
    return {"id": customer, "object": "customer", "metadata": {"user_id": str(USER_ID)}}


def entitled() -> bool:
    return "hd" in entitlements_from_database(user_ids=[USER_ID])[USER_ID].keys


def test_an_event_waiting_on_its_customer_records_it_and_only_that_customer_wakes_it() -> None:
    early = inbox_event("customer.subscription.created", subscription(), status="received", customer_id="cus_heal_1")
    webhook_event_process(event_id=early.id)
    early.refresh_from_db()
    assert (early.status, early.waiting_on) == ("failed", "cus_heal_1")
    assert "not known yet" in early.last_error

    stranger = {**customer_created("cus_other"), "metadata": {"user_id": str(uuid.uuid4())}}
    other = inbox_event("customer.created", stranger, status="received", customer_id="cus_other")
    webhook_event_process(event_id=other.id)
    early.refresh_from_db()
    assert (early.status, early.waiting_on) == ("failed", "cus_heal_1")  # another customer's event leaves it

    ours = inbox_event("customer.created", customer_created(), status="received", customer_id="cus_heal_1")
    webhook_event_process(event_id=ours.id)
    early.refresh_from_db()
    assert (early.status, early.waiting_on) == ("failed", "")  # woken: enqueued now, whatever its backoff said
    assert webhook_event_process(event_id=early.id) == "processed"
    assert entitled()


def test_after_reconcile_recovers_a_user_whose_webhooks_were_all_lost_access_is_granted_within_seconds(
    stripe_fake: StripeFake, settings
) -> None:  # type: ignore[no-untyped-def]
    # Every webhook was lost; Stripe lists the subscription's event before its customer's (as a burst of
    # out-of-order deliveries would bring them), so the subscription meets a customer not known yet.
    now = int(time.time())
    stripe_fake.add_event(stripe_event("customer.subscription.created", subscription(), created=now - 20))
    stripe_fake.add_event(stripe_event("customer.created", customer_created(), created=now - 10))

    with celery_worker(["webhooks"], concurrency=1):  # one worker: the events run in the order they came
        call_command("reconcile", "--events-only")
        # No beat runs here: waiting for the sweep (or the 15-30 s backoff) would never end. The bench
        # measures the delay; this only bounds it generously.
        inbox = WebhookEvent.objects.values_list("type", "status", "last_error")
        assert wait_until(entitled, timeout=15.0), list(inbox)

    assert Subscription.objects.get(stripe_subscription_id="sub_heal_1").status == "active"
    subscription_row = WebhookEvent.objects.get(type="customer.subscription.created")
    assert (subscription_row.status, subscription_row.attempts, subscription_row.waiting_on) == ("processed", 2, "")
