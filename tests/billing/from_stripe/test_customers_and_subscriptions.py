"""Customers and subscriptions applied from objects a (local) Stripe really produced, as the webhook processor does."""

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from billing import gateway, services
from billing.errors import StripeObjectInvalid
from billing.models import Customer, Price, Subscription
from gdpr.models import AuditEvent
from tasks.errors import TransientError
from tasks.models import OutboxMessage
from tests.billing.from_stripe.support import at, events, in_processor

pytestmark = pytest.mark.django_db(transaction=True)


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
