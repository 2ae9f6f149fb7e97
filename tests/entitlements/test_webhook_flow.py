"""Done when: a purchase processed through the webhook pipeline grants its features to the buyer and
their family, a cancellation takes them away, and both are visible at the next check."""

import time
import uuid
from typing import Any

import pytest
from django.test import Client

from entitlements.models import FamilyGroup
from tasks.models import OutboxMessage
from tests.billing.factories import PriceFactory
from tests.entitlements.conftest import as_user
from tests.entitlements.factories import plan_with
from tests.support.stripe_events import delivery, stripe_event
from tests.support.worker import purge
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process

pytestmark = pytest.mark.django_db(transaction=True)

OWNER_EMAIL, BOB_EMAIL = "owner@example.com", "bob@example.com"


@pytest.fixture(autouse=True)
def _no_leftover_jobs() -> Any:
    yield
    purge(["webhooks", "outbox"])  # nothing consumes them in these tests


class Stripe:
    """Stripe's side: events about one customer's subscriptions, delivered and processed in order."""

    def __init__(self, client: Client, user_id: uuid.UUID) -> None:
        self.client, self.user_id = client, user_id
        self.customer = f"cus_{uuid.uuid4().hex[:14]}"
        self.clock = int(time.time()) - 3600

    def subscription(self, sub_id: str, price_id: str, status: str) -> dict[str, Any]:
        start = self.clock
        return {
            "id": sub_id,
            "object": "subscription",
            "customer": self.customer,
            "status": status,
            "cancel_at_period_end": False,
            "canceled_at": self.clock if status == "canceled" else None,
            "ended_at": self.clock if status == "canceled" else None,
            "metadata": {"user_id": str(self.user_id)},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{sub_id}",
                        "price": {"id": price_id},
                        "current_period_start": start,
                        "current_period_end": start + 30 * 86400,
                    }
                ],
            },
        }

    def send(self, event_type: str, obj: dict[str, Any]) -> None:
        self.clock += 1
        event = stripe_event(event_type, obj, created=self.clock)
        assert self.client.post("/webhooks/stripe/", **delivery(event)).status_code == 200
        row = WebhookEvent.objects.get(event_id=event["id"])
        assert webhook_event_process(event_id=row.id) == WebhookEvent.Status.PROCESSED, row.last_error


def entitled(client: Client, user_id: uuid.UUID, feature: str) -> bool:
    return bool(client.get(f"/api/v1/entitlements/{feature}", **as_user(user_id)).json()["entitled"])


def changes(user_id: uuid.UUID) -> list[tuple[list[str], list[str]]]:
    messages = OutboxMessage.objects.filter(type="entitlements.changed", subject=f"user:{user_id}").order_by("id")
    return [(m.data["added"], m.data["removed"]) for m in messages]


def test_a_purchase_grants_the_buyer_and_their_family_and_a_cancellation_takes_it_away(client: Client) -> None:
    owner, bob = uuid.uuid4(), uuid.uuid4()
    price = PriceFactory(
        plan=plan_with(["hd", "kids"], family_seats=3), stripe_price_id=f"price_{uuid.uuid4().hex[:10]}"
    )
    stripe = Stripe(client, owner)
    assert not entitled(client, owner, "kids")  # a denial, now cached

    # The purchase, through the pipeline: the buyer may use the plan at the next check.
    stripe.send("customer.subscription.created", stripe.subscription("sub_first", price.stripe_price_id, "active"))
    assert entitled(client, owner, "kids")

    # The buyer shares it with their family.
    assert client.post("/api/v1/family", **as_user(owner, OWNER_EMAIL)).status_code == 201
    token = client.post(
        "/api/v1/family/invitations", data={"email": BOB_EMAIL}, content_type="application/json", **as_user(owner)
    ).json()["token"]
    body = {"token": token}
    accepted = client.post(
        "/api/v1/family/invitations/accept", body, content_type="application/json", **as_user(bob, BOB_EMAIL)
    )
    assert accepted.status_code == 200
    assert entitled(client, bob, "kids")

    # The cancellation: both lose it at the next check, the family is suspended.
    stripe.send("customer.subscription.deleted", stripe.subscription("sub_first", price.stripe_price_id, "canceled"))
    assert not entitled(client, owner, "kids")
    assert not entitled(client, bob, "kids")
    assert FamilyGroup.objects.get(owner_user_id=owner).status == "suspended"

    # A new purchase: the buyer and the family they already have get it back at the next check.
    stripe.send("customer.subscription.created", stripe.subscription("sub_second", price.stripe_price_id, "active"))
    assert entitled(client, owner, "kids")
    assert entitled(client, bob, "hd")
    assert FamilyGroup.objects.get(owner_user_id=owner).status == "active"

    assert changes(owner) == [(["hd", "kids"], []), ([], ["hd", "kids"]), (["hd", "kids"], [])]
    assert changes(bob) == [(["hd", "kids"], []), ([], ["hd", "kids"]), (["hd", "kids"], [])]


def test_a_failed_renewal_keeps_access_through_the_grace_period_then_an_unpaid_subscription_ends_it(
    client: Client,
) -> None:
    owner = uuid.uuid4()
    price = PriceFactory(plan=plan_with(["hd"]), stripe_price_id=f"price_{uuid.uuid4().hex[:10]}")
    stripe = Stripe(client, owner)
    stripe.send("customer.subscription.created", stripe.subscription("sub_a", price.stripe_price_id, "active"))

    stripe.send("customer.subscription.updated", stripe.subscription("sub_a", price.stripe_price_id, "past_due"))
    assert entitled(client, owner, "hd")  # within the grace period

    stripe.send("customer.subscription.updated", stripe.subscription("sub_a", price.stripe_price_id, "unpaid"))
    assert not entitled(client, owner, "hd")
