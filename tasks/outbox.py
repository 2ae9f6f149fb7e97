"""The transactional outbox: emit() inside a service's transaction, the dispatcher publishes later.

Events go to the durable topic exchange `payments.events` as CloudEvents JSON (structured mode),
persistent, with publisher confirms, message id = event id and routing key = event type. Delivery is
at least once (a crash between publish and commit republishes), so consumers dedupe on the id.
"""

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import amqp.exceptions
import kombu
import structlog
from amqp import spec
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone
from prometheus_client import Counter

from payments_project.raw_rows import insert_many
from payments_project.tracing import current_traceparent
from payments_project.write_batch import defer
from tasks.base import enqueue_on_commit
from tasks.errors import OutboxError, OutboxPublishFailed, TransientError
from tasks.jobs import due, outcome_fields, record_failure
from tasks.models import OutboxMessage

log = structlog.get_logger(__name__)

MAX_BATCHES_PER_RUN = 50
CONTENT_TYPE = "application/cloudevents+json"
CONFIRM_TIMEOUT_SECONDS = 10.0  # a batch's confirms; longer, and the broker is treated as unavailable

PUBLISHED = Counter("payments_outbox_published_total", "Outbox messages published to the events exchange")
PUBLISH_FAILURES = Counter(
    "payments_outbox_publish_failures_total", "Outbox publish attempts that failed (the message backs off or is dead)"
)


def emit(event_type: str, subject: str, data: Mapping[str, Any]) -> OutboxMessage:
    """Record a domain event in the caller's transaction; it is published only if that commits."""
    [message] = emit_many([(event_type, subject, data)])
    return message


def emit_many(
    events: Sequence[tuple[str, str, Mapping[str, Any]]], *, traceparents: Sequence[str] | None = None
) -> list[OutboxMessage]:
    """emit() for several (type, subject, data) events at once, in that order: one INSERT. `traceparents`:
    the trace each event continues, "" for the active span's (by default every event continues that)."""
    if not transaction.get_connection().in_atomic_block:
        raise OutboxError("emit() must run inside the transaction that makes the change")
    here = current_traceparent()
    messages = [
        new_message(event_type, subject, data, traceparent=traceparent or here)
        for (event_type, subject, data), traceparent in zip(events, traceparents or [""] * len(events), strict=True)
    ]
    if not messages:
        return []
    if not defer(_insert_many, messages):  # else inserted with the rest of the batch (write_batch)
        _insert_many([messages])
    dispatch_on_commit()  # here, not with the insert: the nudge carries this caller's trace
    return messages


def new_message(
    event_type: str, subject: str, data: Mapping[str, Any], *, traceparent: str | None = None
) -> OutboxMessage:
    """The row emit() inserts, unsaved (message_columns' values)."""
    return OutboxMessage(**message_columns(event_type, subject, data, traceparent=traceparent))


def message_columns(
    event_type: str, subject: str, data: Mapping[str, Any], *, traceparent: str | None = None
) -> dict[str, Any]:
    """The row emit() inserts as column values (raw_rows.NewRow's: a column left out takes its default), for a
    writer that inserts it itself in one statement with the change it describes
    (payments_project.raw_rows.update_then_insert), then calls dispatch_on_commit(). `traceparent`: the trace
    the event continues (by default the active span's)."""
    try:
        payload = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"event data is not JSON-serialisable: {exc}") from exc
    if traceparent is None:
        traceparent = current_traceparent()
    return {"type": event_type, "subject": subject, "data": payload, "traceparent": traceparent}


def dispatch_on_commit() -> None:
    """Nudge the dispatcher once the current transaction commits (at once outside one): new messages wait."""
    from tasks.tasks import outbox_dispatch  # imported here: the task module imports this one

    enqueue_on_commit(outbox_dispatch)


def _insert_many(batches: list[list[OutboxMessage]]) -> None:
    """One INSERT for the messages of one or more emit_many calls, in that order."""
    insert_many(OutboxMessage, [message for messages in batches for message in messages])


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
    """Publish every due message, batch after batch, on one broker connection; returns how many went out.
    Messages that did not go out wait for their next attempt (or are dead); `raise_on_failure` then raises
    OutboxPublishFailed, so the run that met them is reported failed."""
    published = failed = 0
    with _Publisher(broker_url or settings.CELERY_BROKER_URL) as publisher:
        for _ in range(MAX_BATCHES_PER_RUN):
            claimed, sent = _dispatch_batch(publisher)
            published, failed = published + sent, failed + claimed - sent
            PUBLISHED.inc(sent)
            PUBLISH_FAILURES.inc(claimed - sent)
            if claimed == 0 or sent == 0:
                break
    if failed and raise_on_failure:
        raise OutboxPublishFailed(f"{failed} outbox message(s) not published ({published} were); they back off")
    return published


def _dispatch_batch(publisher: "_Publisher") -> tuple[int, int]:
    """Claim the due head of each subject's queue, publish, and record the outcome; one transaction.

    Only a subject's oldest unpublished message is claimable, so a later one never overtakes an
    earlier one that is backing off, dead, or locked by another dispatcher (and a batch holds at most one
    message of a subject, so confirms arriving in any order cannot reorder a subject). Rows are locked while
    they are published: the lock is the claim, and a crash rolls it (and its counted attempt) back.
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
        sent = publisher.publish(batch)
        published = [m for m in batch if m.published_at is not None]
        if published:  # one plain UPDATE (bulk_update's CASE per row and column costs more than the publish)
            OutboxMessage.objects.filter(id__in=[m.id for m in published]).update(
                status=OutboxMessage.Status.PUBLISHED,
                published_at=published[0].published_at,
                last_error="",
                attempts=F("attempts") + 1,
            )
        if unpublished := [m for m in batch if m.published_at is None]:
            OutboxMessage.objects.bulk_update(unpublished, ["attempts", *outcome_fields(OutboxMessage)])
    return len(batch), sent


class _Publisher:
    """One broker connection for a dispatch run, its channel in confirm mode. A batch is published whole,
    then its confirms are awaited once (RabbitMQ acks several deliveries at a time): one round trip per
    batch instead of one per message. A message is marked published only once the broker acked it; a
    nacked or unconfirmed one backs off (at least once: consumers dedupe on the id)."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.connection: kombu.Connection | None = None
        self.channel: Any = None
        self.next_tag = 1
        self.outcomes: dict[int, bool] = {}  # delivery tag -> acked (True) or nacked (False)
        self.confirms = True

    def __enter__(self) -> "_Publisher":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:
                log.debug("outbox_connection_close_failed", exc_info=True)
        self.connection, self.channel = None, None

    def _open(self) -> Any:
        if self.channel is None:
            # Without the project's confirm_publish: it waits for each message's confirm; here a batch waits once.
            options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "confirm_publish": False}
            self.connection = kombu.Connection(
                self.broker_url, connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT, transport_options=options
            )
            self.connection.ensure_connection(max_retries=1)
            channel: Any = self.connection.default_channel  # py-amqp's Channel, on RabbitMQ
            self.confirms = hasattr(channel, "confirm_select")  # not the file-system broker of development
            if self.confirms:
                channel.confirm_select()
                channel.events["basic_ack"].add(lambda tag, multiple: self._confirmed(tag, multiple, acked=True))
                channel.events["basic_nack"].add(lambda tag, multiple: self._confirmed(tag, multiple, acked=False))
            events_exchange().declare(channel=channel)
            self.channel, self.next_tag, self.outcomes = channel, 1, {}
        return self.channel

    def _confirmed(self, tag: int, multiple: bool, *, acked: bool) -> None:
        for each in range(1, tag + 1) if multiple else (tag,):
            self.outcomes.setdefault(each, acked)

    def publish(self, batch: list[OutboxMessage]) -> int:
        """Publish `batch`, wait for its confirms, and set each message's outcome (unsaved); returns how many
        the broker took."""
        error: BaseException | None = None
        published = 0  # how many of the batch went on the wire, from first_tag on
        first_tag = self.next_tag
        try:
            channel = self._open()
            first_tag = self.next_tag
            producer = None if self.confirms else kombu.Producer(channel)
            for message in batch:
                body = json.dumps(cloudevent(message), cls=DjangoJSONEncoder).encode()
                properties: dict[str, Any] = {"delivery_mode": 2, "message_id": str(message.id)}  # persistent
                if producer is None:  # py-amqp's channel straight: kombu's Producer costs more than the send
                    amqp_message = channel.prepare_message(
                        body, content_type=CONTENT_TYPE, content_encoding="utf-8", properties=properties
                    )
                    channel.basic_publish(amqp_message, exchange=settings.OUTBOX_EXCHANGE, routing_key=message.type)
                else:
                    producer.publish(
                        body,
                        exchange=settings.OUTBOX_EXCHANGE,
                        routing_key=message.type,
                        content_type=CONTENT_TYPE,
                        content_encoding="utf-8",
                        retry=False,
                        **properties,
                    )
                if not self.confirms:  # a transport without confirms: a publish that returned is taken
                    self.outcomes[self.next_tag] = True
                published += 1
                self.next_tag += 1
            deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
            while any(tag not in self.outcomes for tag in range(first_tag, self.next_tag)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the broker did not confirm within {CONFIRM_TIMEOUT_SECONDS} s")
                channel.wait([spec.Basic.Ack, spec.Basic.Nack], timeout=remaining)
        except (OSError, kombu.exceptions.KombuError, amqp.exceptions.AMQPError) as exc:
            # Whatever the connection raised, the broker is down or blinking: worth another try, on a new one.
            error = exc
            self._close()
        sent = 0
        now = timezone.now()
        for position, message in enumerate(batch):
            tag = first_tag + position
            outcome = self.outcomes.pop(tag, None) if position < published else None
            if outcome:
                message.status, message.published_at, message.last_error = OutboxMessage.Status.PUBLISHED, now, ""
                sent += 1
            elif outcome is False:
                record_failure(message, TransientError("the broker refused it (nack)"))
            else:
                record_failure(message, TransientError(f"the broker did not take it: {error!r}"))
        if sent < len(batch):
            log.warning("outbox_publish_failed", count=len(batch) - sent, error=repr(error) if error else "nack")
        return sent
