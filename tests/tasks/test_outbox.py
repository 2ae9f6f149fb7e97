import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import kombu
import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tasks.errors import OutboxError
from tasks.models import OutboxMessage
from tasks.outbox import emit, outbox_dispatch_pending
from tests.support.broker import EventsConsumer, broker_url_through
from tests.support.proxy import TcpProxy
from tests.support.races import race
from tests.support.worker import celery_worker, wait_until


@pytest.fixture
def consumer() -> Iterator[EventsConsumer]:
    events = EventsConsumer()
    yield events
    events.close()


@pytest.fixture(autouse=True)
def _no_leftovers(transactional_db: None) -> None:
    OutboxMessage.objects.all().delete()


def test_emit_outside_a_transaction_is_refused_and_writes_nothing() -> None:
    with pytest.raises(OutboxError, match="inside the transaction"):
        emit("payment.succeeded", "payment:1", {"amount": 100})

    assert OutboxMessage.objects.count() == 0


def test_emit_refuses_data_that_is_not_json() -> None:
    with pytest.raises(OutboxError, match="JSON"), transaction.atomic():
        emit("payment.succeeded", "payment:1", {"amount": object()})

    assert OutboxMessage.objects.count() == 0


def test_exactly_the_committed_events_arrive_as_cloudevents(consumer: EventsConsumer) -> None:
    with transaction.atomic():
        first = emit("payment.succeeded", "payment:1", {"amount": 1299, "currency": "eur"})
        second = emit("subscription.activated", "subscription:9", {"plan": "family"})

    assert outbox_dispatch_pending() == 2
    messages = consumer.drain(expect=2)

    assert [m.properties["message_id"] for m in messages] == [str(first.id), str(second.id)]
    assert [m.delivery_info["routing_key"] for m in messages] == ["payment.succeeded", "subscription.activated"]
    assert all(m.properties["delivery_mode"] == 2 for m in messages)
    assert all(m.content_type == "application/cloudevents+json" for m in messages)
    event = consumer.bodies()[0]
    assert event == {
        "specversion": "1.0",
        "id": str(first.id),
        "source": settings.OUTBOX_SOURCE,
        "type": "payment.succeeded",
        "time": first.created_at.isoformat(),
        "subject": "payment:1",
        "datacontenttype": "application/json",
        "data": {"amount": 1299, "currency": "eur"},
    }
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {OutboxMessage.Status.PUBLISHED}


def test_a_rolled_back_transaction_emits_nothing(consumer: EventsConsumer) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        emit("payment.succeeded", "payment:1", {"amount": 100})
        raise RuntimeError("the payment write failed")

    assert outbox_dispatch_pending() == 0
    assert consumer.drain(expect=1, timeout=1) == []
    assert OutboxMessage.objects.count() == 0


def test_with_the_broker_unreachable_messages_wait_and_go_out_once_it_is_back(consumer: EventsConsumer) -> None:
    with TcpProxy(5672) as rabbitmq:
        broker_url = broker_url_through(rabbitmq.port)
        with transaction.atomic():
            emit("refund.succeeded", "refund:1", {"amount": 500})
        rabbitmq.cut()

        assert outbox_dispatch_pending(broker_url=broker_url) == 0
        waiting = OutboxMessage.objects.get()
        assert waiting.published_at is None
        assert waiting.attempts == 1
        assert waiting.last_error
        assert waiting.next_attempt_at > timezone.now()

        rabbitmq.restore()
        OutboxMessage.objects.update(next_attempt_at=timezone.now())  # the backoff has passed
        assert outbox_dispatch_pending(broker_url=broker_url) == 1

    assert [m.properties["message_id"] for m in consumer.drain(expect=1)] == [str(waiting.id)]


def test_a_message_is_dead_after_the_attempts_its_policy_allows_and_still_holds_back_its_subject(
    consumer: EventsConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OutboxMessage, "retry_policy", replace(OutboxMessage.retry_policy, max_attempts=2))
    with TcpProxy(5672) as rabbitmq:
        broker_url = broker_url_through(rabbitmq.port)
        with transaction.atomic():
            doomed = emit("refund.succeeded", "refund:1", {"amount": 500})
            behind = emit("refund.failed", "refund:1", {})
        rabbitmq.cut()
        for _ in range(2):
            assert outbox_dispatch_pending(broker_url=broker_url) == 0
            OutboxMessage.objects.update(next_attempt_at=timezone.now())  # the backoff has passed

        dead = OutboxMessage.objects.get(id=doomed.id)
        assert (dead.status, dead.attempts, dead.published_at) == (OutboxMessage.Status.DEAD, 2, None)
        assert "broker" in dead.last_error
        rabbitmq.restore()
        with transaction.atomic():
            other_subject = emit("refund.succeeded", "refund:2", {"amount": 700})
        assert outbox_dispatch_pending(broker_url=broker_url) == 1

    assert [m.properties["message_id"] for m in consumer.drain(expect=1)] == [str(other_subject.id)]
    assert OutboxMessage.objects.get(id=behind.id).status == OutboxMessage.Status.PENDING  # order kept


def test_a_message_backing_off_holds_back_its_own_subject_but_not_others(consumer: EventsConsumer) -> None:
    with transaction.atomic():
        stuck = emit("subscription.activated", "subscription:1", {})
        later_same_subject = emit("subscription.canceled", "subscription:1", {})
        other_subject = emit("subscription.activated", "subscription:2", {})
    OutboxMessage.objects.filter(id=stuck.id).update(attempts=1, next_attempt_at=timezone.now() + timedelta(hours=1))

    outbox_dispatch_pending()

    assert [m.properties["message_id"] for m in consumer.drain(expect=1)] == [str(other_subject.id)]
    OutboxMessage.objects.filter(id=stuck.id).update(next_attempt_at=timezone.now())
    outbox_dispatch_pending()
    ids = [m.properties["message_id"] for m in consumer.drain(expect=3)]
    assert ids == [str(other_subject.id), str(stuck.id), str(later_same_subject.id)]


def test_two_dispatchers_racing_publish_each_message_once_and_in_order_per_subject(consumer: EventsConsumer) -> None:
    with transaction.atomic():
        emitted = [emit("entitlements.changed", f"user:{i % 7}", {"n": i}) for i in range(300)]
    published = race(outbox_dispatch_pending, outbox_dispatch_pending)

    messages = consumer.drain(expect=300, timeout=30)
    counts = Counter(m.properties["message_id"] for m in messages)
    assert sum(published) == 300
    assert len(messages) == 300
    assert set(counts) == {str(message.id) for message in emitted}
    assert max(counts.values()) == 1
    by_subject: dict[str, list[int]] = {}
    for body in consumer.bodies():
        by_subject.setdefault(body["subject"], []).append(body["data"]["n"])
    assert all(ns == sorted(ns) for ns in by_subject.values())


@pytest.mark.slow
def test_a_commit_nudges_a_real_worker_to_publish_without_waiting_for_beat(consumer: EventsConsumer) -> None:
    with celery_worker(["outbox"]):
        with transaction.atomic():
            message = emit("payment.succeeded", "payment:7", {"amount": 100})

        messages = consumer.drain(expect=1, timeout=20)

    assert [m.properties["message_id"] for m in messages] == [str(message.id)]
    assert wait_until(lambda: OutboxMessage.objects.get(id=message.id).published_at is not None)


def test_a_batch_marks_exactly_what_the_broker_confirmed_and_the_refused_rest_backs_off(
    consumer: EventsConsumer,
) -> None:
    # Another service's queue that takes two messages and refuses the rest: RabbitMQ nacks those to us.
    full = kombu.Queue(
        f"test-full-{uuid.uuid4().hex}",
        kombu.Exchange(settings.OUTBOX_EXCHANGE, type="topic", durable=True),
        routing_key="#",
        queue_arguments={"x-max-length": 2, "x-overflow": "reject-publish"},
    )
    with kombu.Connection(settings.CELERY_BROKER_URL) as connection:
        bound = full(connection.default_channel)
        bound.declare()
        try:
            with transaction.atomic():
                emitted = [emit("payment.succeeded", f"payment:{n}", {"n": n}) for n in range(5)]

            published = outbox_dispatch_pending()

            rows = {m.id: m for m in OutboxMessage.objects.all()}
            assert published == 2
            assert [rows[m.id].status for m in emitted] == ["published"] * 2 + ["pending"] * 3
            assert all(rows[m.id].attempts == 1 for m in emitted)
            assert all("nack" in rows[m.id].last_error for m in emitted[2:])
            assert all(rows[m.id].next_attempt_at > timezone.now() for m in emitted[2:])  # backing off
            assert bound.queue_declare(passive=True).message_count == 2
        finally:
            bound.delete()
    # Acked ones went out once; refused ones may reach other consumers and will go again (at least once).
    consumer.drain(expect=5)
    assert {str(m.id) for m in emitted[:2]} <= {body["id"] for body in consumer.bodies()}
