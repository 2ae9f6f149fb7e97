"""The outbox made visible: health metrics, a dispatch run that reports its failures, dead messages that a
person replays (audited) from a read-only admin."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from gdpr.models import AuditEvent
from tasks.models import OutboxMessage
from tasks.outbox import emit, outbox_dispatch_pending
from tasks.outbox_ops import outbox_health_measure, outbox_message_replay
from tasks.tasks import outbox_dispatch
from tests.support.auth import staff_client
from tests.support.broker import EventsConsumer, broker_url_through
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "/admin/tasks/outboxmessage/"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _empty_outbox() -> None:
    OutboxMessage.objects.all().delete()


@pytest.fixture
def broker_down(settings: object) -> Iterator[TcpProxy]:
    """The broker as the dispatcher sees it, through a proxy the test cuts."""
    with TcpProxy(5672) as rabbitmq:
        settings.CELERY_BROKER_URL = broker_url_through(rabbitmq.port)  # type: ignore[attr-defined]
        rabbitmq.cut()
        yield rabbitmq


def dead_message(user_id: str = "0190c6a8-3333-7000-8000-000000000001") -> OutboxMessage:
    with transaction.atomic():
        message = emit("entitlements.changed", f"user:{user_id}", {"user_id": user_id, "added": ["hd"]})
    OutboxMessage.objects.filter(id=message.id).update(status="dead", attempts=300, last_error="TransientError: broker")
    return OutboxMessage.objects.get(id=message.id)


def test_backlog_oldest_waiting_age_and_dead_messages_are_measured() -> None:
    with transaction.atomic():
        old = emit("payment.succeeded", "payment:1", {"amount": 100})
        emit("payment.succeeded", "payment:2", {"amount": 200})
    OutboxMessage.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(minutes=10))
    dead_message()

    measured = outbox_health_measure()

    assert measured["backlog"] == 2
    assert 600 <= measured["oldest_age_seconds"] < 660
    assert measured["dead"] == 1
    assert sample("payments_outbox_backlog") == 2
    assert 600 <= sample("payments_outbox_oldest_unpublished_age_seconds") < 660
    assert sample("payments_outbox_dead") == 1


def test_an_empty_outbox_measures_no_age() -> None:
    assert outbox_health_measure() == {"backlog": 0.0, "oldest_age_seconds": 0.0, "dead": 0.0}
    assert sample("payments_outbox_oldest_unpublished_age_seconds") == 0


def test_a_dispatch_run_whose_publish_fails_is_reported_failed_and_counted(broker_down: TcpProxy) -> None:
    with transaction.atomic():
        emit("refund.succeeded", "refund:1", {"amount": 500})
        emit("refund.succeeded", "refund:2", {"amount": 700})
    failures = sample("payments_outbox_publish_failures_total")
    runs = sample("payments_task_runs_total", task="outbox.dispatch", outcome="failure")

    result = outbox_dispatch.apply()

    assert result.failed()
    assert "2 outbox message(s) not published" in str(result.result)
    assert sample("payments_task_runs_total", task="outbox.dispatch", outcome="failure") == runs + 1
    assert sample("payments_outbox_publish_failures_total") == failures + 2
    assert OutboxMessage.objects.filter(status="pending", attempts=1).count() == 2  # each backs off on its own


def test_a_dispatch_run_that_publishes_everything_succeeds_and_counts_what_went_out() -> None:
    with transaction.atomic():
        emit("refund.succeeded", "refund:1", {"amount": 500})
    published = sample("payments_outbox_published_total")

    result = outbox_dispatch.apply()

    assert result.successful()
    assert result.result == 1
    assert sample("payments_outbox_published_total") == published + 1
    assert sample("payments_task_last_success_timestamp_seconds", task="outbox.dispatch") > 0


def test_a_replayed_dead_message_is_published_and_the_replay_is_audited_without_its_subject() -> None:
    message = dead_message()
    consumer = EventsConsumer()

    assert outbox_message_replay(message_id=message.id, staff_id="7") is True
    replayed = OutboxMessage.objects.get(id=message.id)
    assert (replayed.status, replayed.attempts) == ("pending", 0)
    assert outbox_dispatch_pending() == 1
    [delivered] = consumer.drain(expect=1)
    consumer.close()

    assert delivered.properties["message_id"] == str(message.id)
    assert OutboxMessage.objects.get(id=message.id).last_error == ""
    audit = AuditEvent.objects.get(action="outbox.replayed")
    assert (audit.actor_type, audit.actor_id, audit.target_type, audit.target_id) == (
        "staff",
        "7",
        "outbox_message",
        str(message.id),
    )
    assert audit.metadata == {"type": "entitlements.changed", "previous_status": "dead", "attempts": 300}
    assert "0190c6a8-3333" not in str(audit.metadata)


def test_only_a_dead_message_is_replayed() -> None:
    with transaction.atomic():
        waiting = emit("payment.succeeded", "payment:1", {"amount": 100})

    assert outbox_message_replay(message_id=waiting.id, staff_id="7") is False
    assert not AuditEvent.objects.filter(action="outbox.replayed").exists()


@pytest.mark.parametrize("role", ["finance", "ops"])
def test_finance_and_ops_replay_dead_messages_from_the_admin(role: str) -> None:
    message = dead_message()
    staff = staff_client("alice", role)

    listing = staff.get(CHANGELIST + "?status__exact=dead")
    response = staff.post(CHANGELIST, {"action": "replay", "_selected_action": [str(message.id)]})

    assert listing.status_code == 200
    assert str(message.id).encode() in listing.content
    assert b"TransientError: broker" in listing.content  # the last error, in the list
    assert response.status_code == 302
    assert OutboxMessage.objects.get(id=message.id).status == "pending"
    assert AuditEvent.objects.filter(action="outbox.replayed", target_id=str(message.id)).count() == 1


def test_support_sees_the_outbox_read_only_and_cannot_replay() -> None:
    message = dead_message()
    bob = staff_client("bob", "support")

    detail = bob.get(f"{CHANGELIST}{message.id}/change/")
    edit = bob.post(f"{CHANGELIST}{message.id}/change/", {"status": "published"})
    replay = bob.post(CHANGELIST, {"action": "replay", "_selected_action": [str(message.id)]})

    assert detail.status_code == 200
    assert b"TransientError: broker" in detail.content
    assert b'name="status"' not in detail.content  # nothing to edit
    assert edit.status_code == 403
    assert replay.status_code == 403
    assert OutboxMessage.objects.get(id=message.id).status == "dead"


def test_staff_without_a_role_see_no_outbox() -> None:
    assert staff_client("carol", None).get(CHANGELIST).status_code == 403
