"""The transactional outbox: emit() inside a service's transaction, the dispatcher publishes later.

Events go to the durable topic exchange `payments.events` as CloudEvents JSON (structured mode),
persistent, with publisher confirms, message id = event id and routing key = event type. Delivery is
at least once (a crash between publish and commit republishes), so consumers dedupe on the id.
"""

import json
from collections.abc import Mapping
from typing import Any

import kombu
import structlog
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from prometheus_client import Counter

from payments_project.tracing import current_traceparent
from tasks.base import enqueue_on_commit
from tasks.errors import OutboxError, OutboxPublishFailed, TransientError
from tasks.jobs import due, outcome_fields, record_failure
from tasks.models import OutboxMessage

log = structlog.get_logger(__name__)

MAX_BATCHES_PER_RUN = 50

PUBLISHED = Counter("payments_outbox_published_total", "Outbox messages published to the events exchange")
PUBLISH_FAILURES = Counter(
    "payments_outbox_publish_failures_total", "Outbox publish attempts that failed (the message backs off or is dead)"
)


def emit(event_type: str, subject: str, data: Mapping[str, Any]) -> OutboxMessage:
    """Record a domain event in the caller's transaction; it is published only if that commits."""
    if not transaction.get_connection().in_atomic_block:
        raise OutboxError("emit() must run inside the transaction that makes the change")
    try:
        payload = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"event data is not JSON-serialisable: {exc}") from exc
    message = OutboxMessage.objects.create(
        type=event_type, subject=subject, data=payload, traceparent=current_traceparent()
    )
    from tasks.tasks import outbox_dispatch  # imported here: the task module imports this one

    enqueue_on_commit(outbox_dispatch)
    return message


def cloudevent(message: OutboxMessage) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": str(message.id),
        "source": settings.OUTBOX_SOURCE,
        "type": message.type,
        "time": message.created_at.isoformat(),
        "subject": message.subject,
        "datacontenttype": "application/json",
        "data": message.data,
    }
    if message.traceparent:  # CloudEvents' distributed-tracing extension: consumers continue our trace
        event["traceparent"] = message.traceparent
    return event


def events_exchange() -> kombu.Exchange:
    return kombu.Exchange(settings.OUTBOX_EXCHANGE, type="topic", durable=True)


def outbox_dispatch_pending(*, broker_url: str | None = None, raise_on_failure: bool = False) -> int:
    """Publish every due message, batch after batch; returns how many went out. Messages that did not go
    out wait for their next attempt (or are dead); `raise_on_failure` then raises OutboxPublishFailed, so
    the run that met them is reported failed."""
    published = failed = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        claimed, sent = _dispatch_batch(broker_url or settings.CELERY_BROKER_URL)
        published, failed = published + sent, failed + claimed - sent
        PUBLISHED.inc(sent)
        PUBLISH_FAILURES.inc(claimed - sent)
        if claimed == 0 or sent == 0:
            break
    if failed and raise_on_failure:
        raise OutboxPublishFailed(f"{failed} outbox message(s) not published ({published} were); they back off")
    return published


def _dispatch_batch(broker_url: str) -> tuple[int, int]:
    """Claim the due head of each subject's queue, publish, and record the outcome; one transaction.

    Only a subject's oldest unpublished message is claimable, so a later one never overtakes an
    earlier one that is backing off, dead, or locked by another dispatcher. Rows are locked while they
    are published: the lock is the claim, and a crash rolls it (and its counted attempt) back.
    """
    earlier_unpublished = OutboxMessage.objects.filter(
        subject=OuterRef("subject"), published_at__isnull=True, id__lt=OuterRef("id")
    )
    with transaction.atomic():
        batch = list(
            due(OutboxMessage)
            .select_for_update(skip_locked=True, of=("self",))
            .exclude(Exists(earlier_unpublished))
            .order_by("id")[: settings.OUTBOX_BATCH_SIZE]
        )
        if not batch:
            return 0, 0
        for message in batch:
            message.attempts += 1
        sent = _publish(batch, broker_url)
        OutboxMessage.objects.bulk_update(batch, ["published_at", "attempts", *outcome_fields(OutboxMessage)])
    return len(batch), sent


def _publish(batch: list[OutboxMessage], broker_url: str) -> int:
    sent = 0
    exchange = events_exchange()
    try:
        with kombu.Connection(
            broker_url,
            connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        ) as connection:
            connection.ensure_connection(max_retries=1)
            producer = connection.Producer()
            for message in batch:
                producer.publish(
                    json.dumps(cloudevent(message), cls=DjangoJSONEncoder).encode(),
                    exchange=exchange,
                    routing_key=message.type,
                    declare=[exchange],
                    delivery_mode=2,  # persistent
                    content_type="application/cloudevents+json",
                    content_encoding="utf-8",
                    message_id=str(message.id),
                    retry=False,
                )
                message.status, message.published_at = OutboxMessage.Status.PUBLISHED, timezone.now()
                message.last_error = ""
                sent += 1
    except (OSError, kombu.exceptions.KombuError) as exc:
        # Whatever the connection raised, the broker is down or blinking: worth another try.
        unsent = [m for m in batch if m.published_at is None]
        log.warning("outbox_publish_failed", count=len(unsent), error=repr(exc))
        failure = TransientError(f"the broker did not take it: {exc!r}")
        for message in unsent:
            record_failure(message, failure)
    return sent
