import pytest
from django.test import Client

from gdpr.models import AuditEvent
from tests.support.auth import staff_client
from tests.support.stripe_events import delivery, stripe_event
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "/admin/webhooks/webhookevent/"


def dead_event(client: Client) -> WebhookEvent:
    client.post("/webhooks/stripe/", **delivery(stripe_event("test.effect", {"id": "obj_1", "fail": "permanent"})))
    event = WebhookEvent.objects.get()
    webhook_event_process(event_id=event.id)
    return WebhookEvent.objects.get()


def test_finance_replays_a_dead_event_and_the_replay_is_audited(client: Client) -> None:
    event = dead_event(client)
    alice = staff_client("alice", "finance")

    response = alice.post(CHANGELIST, {"action": "replay", "_selected_action": [str(event.id)]})

    assert response.status_code == 302
    replayed = WebhookEvent.objects.get()
    assert (replayed.status, replayed.attempts, replayed.last_error) == ("received", 0, "")
    audit = AuditEvent.objects.get(action="webhook.replayed")
    assert (audit.actor_type, audit.target_id) == ("staff", str(event.id))
    assert audit.metadata["previous_status"] == "dead"


def test_finance_marks_a_dead_event_ignored_and_it_is_audited(client: Client) -> None:
    event = dead_event(client)

    staff_client("alice", "finance").post(CHANGELIST, {"action": "mark_ignored", "_selected_action": [str(event.id)]})

    assert WebhookEvent.objects.get().status == "ignored"
    assert AuditEvent.objects.filter(action="webhook.ignored", target_id=str(event.id)).count() == 1


def test_support_sees_events_but_cannot_replay_them(client: Client) -> None:
    event = dead_event(client)
    bob = staff_client("bob", "support")

    listing = bob.get(CHANGELIST + "?status__exact=dead")
    detail = bob.get(f"{CHANGELIST}{event.id}/change/")
    replay = bob.post(CHANGELIST, {"action": "replay", "_selected_action": [str(event.id)]})

    assert listing.status_code == 200
    assert event.event_id.encode() in listing.content
    assert detail.status_code == 200
    assert b"obj_1" in detail.content  # the raw payload is shown
    assert replay.status_code == 403
    assert WebhookEvent.objects.get().status == "dead"


def test_staff_without_a_role_see_nothing(client: Client) -> None:
    dead_event(client)

    assert staff_client("charlie", None).get(CHANGELIST).status_code == 403
