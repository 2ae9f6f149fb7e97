"""After an erasure: what Stripe sends later about the erased customer is stored redacted as it arrives, and
published domain events (which carry user ids) are deleted after OUTBOX_RETENTION_DAYS. Then no text or JSON
column of any table holds the user's email or id (README, GDPR: "What is kept and why")."""

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from django.db import transaction
from django.test import Client
from django.utils import timezone

from billing.models import Customer
from gdpr.models import RequestStatus
from gdpr.services import data_requests_sweep
from tasks.models import OutboxMessage
from tasks.outbox import emit
from tasks.outbox_ops import outbox_published_prune
from tests.gdpr.support import run_to_the_end, scan_database, seed_everywhere
from tests.support.auth import bearer
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake
from webhooks.models import WebhookEvent

ALICE = uuid.UUID("0190f1a2-7c4e-7d11-8a00-0000000a1ace")
ALICE_EMAIL = "Alice.Late@Example.com"

pytestmark = pytest.mark.django_db(transaction=True)


def _late_events(customer: Customer, subscription_id: str) -> list[dict[str, Any]]:
    """What Stripe sends once the erasure deleted the customer, and one event naming only the user id."""
    deleted_customer = {
        "id": customer.stripe_customer_id,
        "object": "customer",
        "deleted": True,
        "email": ALICE_EMAIL,
        "name": "Alice Liddell",
        "metadata": {"user_id": str(ALICE)},
    }
    subscription = {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer.stripe_customer_id,
        "status": "canceled",
        "metadata": {"user_id": str(ALICE)},
        "items": {"object": "list", "data": []},
    }
    session = {
        "id": f"cs_test_{uuid.uuid4().hex[:16]}",
        "object": "checkout.session",
        "customer": None,
        "customer_details": {"email": ALICE_EMAIL},
        "metadata": {"user_id": str(ALICE)},
        "status": "expired",
    }
    return [
        stripe_event("customer.deleted", deleted_customer),
        stripe_event("customer.subscription.deleted", subscription),
        stripe_event("checkout.session.expired", session),
    ]


def test_stripe_events_about_an_erased_customer_are_stored_redacted_and_nothing_of_the_user_is_left(
    stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake, export_storage: Path
) -> None:
    # given: Alice erased
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL, stripe_sdk=stripe_sdk)
    client = Client()
    response = client.post(
        "/api/v1/gdpr/erasure", content_type="application/json", HTTP_AUTHORIZATION=bearer(ALICE, ALICE_EMAIL)
    )
    done = run_to_the_end(uuid.UUID(response.json()["id"]))
    assert done.status == RequestStatus.COMPLETED, done.last_error
    data_requests_sweep()
    assert scan_database(seeded.needles) == []

    # when: Stripe's late events arrive
    late = _late_events(seeded.customer, seeded.subscription.stripe_subscription_id)
    for event in late:
        answer = client.post("/webhooks/stripe/", **delivery(event))
        assert answer.status_code == 200
        assert answer.json() == {"received": True, "duplicate": False}

    # then: stored (they deduplicate redeliveries), redacted to their envelope, not processed
    for event in late:
        stored = WebhookEvent.objects.get(event_id=event["id"])
        assert json.loads(stored.raw_body)["jia_redacted"] == "erased_subject"
        assert (stored.status, stored.customer_id) == ("ignored", "")
    assert client.post("/webhooks/stripe/", **delivery(late[0])).json()["duplicate"] is True
    # and the whole database holds neither her address nor her id (see README: what is kept)
    assert scan_database(seeded.needles) == []


def test_an_event_about_someone_not_erased_is_stored_in_full(stripe_fake: StripeFake) -> None:
    other = uuid.uuid4()
    event = stripe_event(
        "checkout.session.expired",
        {"id": "cs_test_other", "object": "checkout.session", "customer": None, "metadata": {"user_id": str(other)}},
    )

    assert Client().post("/webhooks/stripe/", **delivery(event)).status_code == 200

    stored = WebhookEvent.objects.get(event_id=event["id"])
    assert str(other) in stored.raw_body
    assert stored.status != "ignored"


def _message(subject: str, **fields: Any) -> OutboxMessage:
    with transaction.atomic():
        message = emit("test.retention", subject, {"user_id": subject})
    OutboxMessage.objects.filter(id=message.id).update(**fields)
    return OutboxMessage.objects.get(id=message.id)


def test_published_outbox_messages_are_deleted_after_the_retention_in_batches(settings: Any) -> None:
    settings.OUTBOX_RETENTION_DAYS = 7
    now = timezone.now()
    old = [_message(f"user:{i}", status="published", published_at=now - timedelta(days=8)) for i in range(5)]
    recent = _message("user:recent", status="published", published_at=now - timedelta(days=6))
    pending = _message("user:pending", status="pending", created_at=now - timedelta(days=30))
    dead = _message("user:dead", status="dead", created_at=now - timedelta(days=30))

    started = time.monotonic()
    pruned = outbox_published_prune(batch_size=2)

    assert pruned == 5
    assert not OutboxMessage.objects.filter(id__in=[m.id for m in old]).exists()
    assert set(OutboxMessage.objects.values_list("id", flat=True)) == {recent.id, pending.id, dead.id}
    assert time.monotonic() - started < 5
    assert outbox_published_prune(batch_size=2) == 0


def test_the_prune_runs_on_beat() -> None:
    from payments_project.celery import app

    assert "outbox.prune" in {entry["task"] for entry in app.conf.beat_schedule.values()}
