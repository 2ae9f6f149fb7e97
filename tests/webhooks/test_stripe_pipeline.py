"""Stripe events through the whole pipeline: signed delivery → inbox → handler → billing services."""

import re
import time
import uuid
from typing import Any

import pytest
from django.test import Client

from billing.models import Subscription
from gdpr.models import AuditEvent
from tasks.models import OutboxMessage
from tests.billing.factories import PriceFactory
from tests.support.races import race, raised
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake
from tests.support.worker import celery_worker, wait_until
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process, webhook_event_replay

pytestmark = pytest.mark.django_db(transaction=True)
USER_ID = uuid.UUID("0190c6a8-1111-7000-8000-000000000001")


def subscription_object(status: str = "active", *, legacy_plan: bool = False, **fields: Any) -> dict[str, Any]:
    price_ref = {"id": "price_family_month", "object": "plan" if legacy_plan else "price"}
    item = {
        "id": "si_1",
        "object": "subscription_item",
        ("plan" if legacy_plan else "price"): price_ref,
        "current_period_start": 1_767_225_600,
        "current_period_end": 1_769_904_000,
    }
    return {
        "id": "sub_family_1",
        "object": "subscription",
        "customer": {"id": "cus_family_1", "object": "customer", "metadata": {"user_id": str(USER_ID)}},
        "status": status,
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [item]},
        "metadata": {"user_id": str(USER_ID)},
        **fields,
    }


def deliver_and_process(client: Client, event: dict[str, Any]) -> WebhookEvent:
    assert client.post("/webhooks/stripe/", **delivery(event)).status_code == 200
    row = WebhookEvent.objects.get(event_id=event["id"])
    webhook_event_process(event_id=row.id)
    return WebhookEvent.objects.get(id=row.id)


@pytest.fixture(autouse=True)
def catalog() -> None:
    PriceFactory(stripe_price_id="price_family_month", plan__code="family", plan__family_seats=5)


def test_a_subscription_event_creates_the_subscription_of_the_user_its_customer_names(client: Client) -> None:
    row = deliver_and_process(client, stripe_event("customer.subscription.created", subscription_object()))

    assert row.status == "processed"
    subscription = Subscription.objects.get()
    assert (subscription.customer.user_id, subscription.plan.code, subscription.status) == (USER_ID, "family", "active")
    assert OutboxMessage.objects.filter(subject=f"subscription:{subscription.id}").count() == 1


def test_the_legacy_plan_field_on_items_is_understood(client: Client) -> None:
    deliver_and_process(client, stripe_event("customer.subscription.created", subscription_object(legacy_plan=True)))

    assert Subscription.objects.get().plan.code == "family"


def test_an_older_update_delivered_after_a_newer_one_leaves_the_newest_state(client: Client) -> None:
    now = int(time.time())
    newer = stripe_event("customer.subscription.updated", subscription_object("canceled"), created=now)
    older = stripe_event("customer.subscription.updated", subscription_object("past_due"), created=now - 60)

    deliver_and_process(client, newer)
    late = deliver_and_process(client, older)

    assert late.status == "processed"
    assert Subscription.objects.get().status == "canceled"


def test_replaying_a_processed_event_changes_nothing(client: Client) -> None:
    event = stripe_event("customer.subscription.created", subscription_object())
    row = deliver_and_process(client, event)
    before = (
        list(Subscription.objects.values()),
        OutboxMessage.objects.count(),
        AuditEvent.objects.exclude(action="webhook.replayed").count(),
    )

    webhook_event_replay(event_id=row.id, staff_id="1")
    webhook_event_process(event_id=row.id)

    after = (
        list(Subscription.objects.values()),
        OutboxMessage.objects.count(),
        AuditEvent.objects.exclude(action="webhook.replayed").count(),
    )
    assert WebhookEvent.objects.get(id=row.id).status == "processed"
    assert after == before


def test_a_subscription_for_a_price_not_in_the_catalog_goes_dead_saying_so(client: Client) -> None:
    obj = subscription_object()
    obj["items"]["data"][0]["price"]["id"] = "price_unknown"

    row = deliver_and_process(client, stripe_event("customer.subscription.created", obj))

    assert row.status == "dead"
    assert "price_unknown" in row.last_error
    assert Subscription.objects.count() == 0


def test_a_subscription_whose_customer_is_unknown_yet_is_retried_later(client: Client) -> None:
    obj = subscription_object()
    obj["customer"] = "cus_not_seen_yet"
    del obj["metadata"]["user_id"]

    row = deliver_and_process(client, stripe_event("customer.subscription.created", obj))

    assert row.status == "failed"
    assert "not known yet" in row.last_error


@pytest.mark.slow
def test_the_same_event_delivered_twenty_times_at_once_has_one_effect() -> None:
    event = stripe_event("customer.subscription.created", subscription_object())
    kwargs = delivery(event)

    with celery_worker(["webhooks"], concurrency=2):
        assert raised(race(*[lambda: Client().post("/webhooks/stripe/", **kwargs)] * 20)) == []
        assert wait_until(lambda: WebhookEvent.objects.filter(status="processed").count() == 1)

    assert WebhookEvent.objects.count() == 1
    assert Subscription.objects.count() == 1
    assert OutboxMessage.objects.filter(type="subscription.activated").count() == 1


def test_two_versions_in_the_same_second_are_settled_by_asking_stripe(client: Client, stripe_fake: StripeFake) -> None:
    second = int(time.time())
    deliver_and_process(
        client, stripe_event("customer.subscription.updated", subscription_object("canceled"), created=second)
    )
    stripe_fake.objects["sub_family_1"] = subscription_object("canceled")

    row = deliver_and_process(
        client, stripe_event("customer.subscription.updated", subscription_object("active"), created=second)
    )

    assert row.status == "processed"
    assert Subscription.objects.get().status == "canceled"  # Stripe's current version, not the event's


def test_when_stripe_cannot_be_asked_the_undecidable_event_is_retried(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.STRIPE_API_KEY = ""
    second = int(time.time())
    deliver_and_process(
        client, stripe_event("customer.subscription.updated", subscription_object("canceled"), created=second)
    )

    row = deliver_and_process(
        client, stripe_event("customer.subscription.updated", subscription_object("active"), created=second)
    )

    assert row.status == "failed"
    assert "StripeNotConfigured" in row.last_error
    assert Subscription.objects.get().status == "canceled"


def test_an_update_of_a_known_subscription_spends_no_round_trip_it_can_avoid(client: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    created = stripe_event(
        "customer.subscription.created", subscription_object("incomplete"), created=int(time.time()) - 10
    )
    deliver_and_process(client, created)
    assert (
        client.post(
            "/webhooks/stripe/", **delivery(stripe_event("customer.subscription.updated", subscription_object()))
        ).status_code
        == 200
    )
    row = WebhookEvent.objects.get(type="customer.subscription.updated")

    with CaptureQueriesContext(connection) as queries:
        assert webhook_event_process(event_id=row.id) == "processed"

    statements = [query["sql"] for query in queries.captured_queries]
    assert "RETURNING" in statements[0] and "raw_body" in statements[0]  # the claim reads the payload
    assert not any('"raw_body"' in sql for sql in statements[1:])  # ... and nothing reads it again
    assert not any("ROLLBACK TO SAVEPOINT" in sql for sql in statements)  # the row is locked, not re-inserted
    lazy_load = re.compile(r'^SELECT .* FROM "billing_(plan|price|customer)" WHERE "billing_\1"."id" = \S+ LIMIT 21$')
    lazy = [sql for sql in statements if lazy_load.match(sql)]
    assert lazy == []  # related rows the service already holds are not read again
    assert Subscription.objects.get().status == "active"


def test_a_drain_applies_updates_of_known_subscriptions_in_few_statements_each(client: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webhooks.services import webhook_events_drain

    # given ten users' incomplete subscriptions, known, and an update activating each
    def of(n: int, status: str) -> dict[str, Any]:
        customer = {"id": f"cus_{n}", "object": "customer", "metadata": {"user_id": str(uuid.UUID(int=n + 1))}}
        return subscription_object(status, id=f"sub_{n}", customer=customer, metadata={})

    for n in range(10):
        deliver_and_process(client, stripe_event("customer.subscription.created", of(n, "incomplete"), created=1))
    for n in range(10):
        update = stripe_event("customer.subscription.updated", of(n, "active"))
        assert client.post("/webhooks/stripe/", **delivery(update)).status_code == 200

    # when a drain runs them
    with CaptureQueriesContext(connection) as queries:
        assert webhook_events_drain() == 10

    # then each is applied, audited, emitted and its entitlements refreshed, sharing the batch's statements
    assert set(Subscription.objects.values_list("status", flat=True)) == {"active"}
    assert OutboxMessage.objects.filter(type="subscription.activated").count() == 10
    # (18 each when every event had a transaction of its own, 6.5 when a chunk's events locked their rows and
    # subscriptions, saved their outcomes and appended their audit and outbox rows one by one, 2.6 when each
    # event's subscription had an UPDATE of its own): the chunk shares every statement
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) <= 17
    subscription_updates = [sql for sql in statements if 'UPDATE "billing_subscription"' in sql]
    assert len(subscription_updates) == 1  # the ten rows' new versions in one statement
    subscription_locks = [sql for sql in statements if 'FROM "billing_subscription" s ' in sql]
    assert len(subscription_locks) == 1 and subscription_locks[0].endswith("ORDER BY s.id FOR UPDATE OF s")
    row_locks = [sql for sql in statements if sql.startswith("SELECT") and 'FROM "webhooks_webhookevent"' in sql]
    assert len(row_locks) == 1 and row_locks[0].endswith("FOR UPDATE")  # the chunk's event rows, together
    assert sum(sql.startswith('INSERT INTO "gdpr_auditevent"') for sql in statements) == 1
    assert sum(sql.startswith('INSERT INTO "tasks_outboxmessage"') for sql in statements) == 1
