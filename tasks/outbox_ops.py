"""What operators need of the outbox: its health as metrics (set by beat's outbox.measure) and the replay
of a dead message. The dispatcher itself is tasks.outbox."""

import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.dispatch import Signal
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import Gauge

from tasks.base import enqueue_on_commit
from tasks.models import OutboxMessage

Status = OutboxMessage.Status
log = structlog.get_logger(__name__)

# "mostrecent": with several processes (PROMETHEUS_MULTIPROC_DIR) the last measurement wins, whoever made it.
BACKLOG = Gauge(
    "payments_outbox_backlog",
    "Outbox messages waiting to be published (dead ones excluded)",
    multiprocess_mode="mostrecent",
)
OLDEST_AGE = Gauge(
    "payments_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest message waiting to be published (0 when none waits)",
    multiprocess_mode="mostrecent",
)
DEAD = Gauge(
    "payments_outbox_dead", "Outbox messages out of attempts: a person must replay them", multiprocess_mode="mostrecent"
)

# Sent in the replay's transaction, so the audit trail (gdpr, an app above this one) records it in the same commit.
outbox_message_replayed = Signal()  # kwargs: message, previous_status, staff_id, request


def outbox_health_measure() -> dict[str, float]:
    """Set the outbox gauges from the table (three indexed queries); returns what was measured."""
    waiting = OutboxMessage.objects.filter(status=Status.PENDING)
    oldest = waiting.aggregate(oldest=Min("created_at"))["oldest"]
    measured = {
        "backlog": float(waiting.count()),
        "oldest_age_seconds": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
        "dead": float(OutboxMessage.objects.filter(status=Status.DEAD).count()),
    }
    BACKLOG.set(measured["backlog"])
    OLDEST_AGE.set(measured["oldest_age_seconds"])
    DEAD.set(measured["dead"])
    return measured


@transaction.atomic(durable=True)
def outbox_message_replay(*, message_id: uuid.UUID, staff_id: str, request: HttpRequest | None = None) -> bool:
    """Give a dead message a fresh set of attempts and nudge the dispatcher; audited. Returns False (and
    changes nothing) for a message that is not dead: a waiting one is already being retried, a published
    one went out (consumers dedupe on its id, but replaying it is never needed)."""
    message = OutboxMessage.objects.select_for_update().get(id=message_id)  # waits for a dispatcher holding it
    if message.status != Status.DEAD:
        return False
    previous: dict[str, Any] = {"previous_status": message.status, "attempts": message.attempts}
    message.status, message.attempts, message.next_attempt_at = Status.PENDING, 0, timezone.now()
    message.save(update_fields=["status", "attempts", "next_attempt_at"])  # last_error stays until it goes out
    outbox_message_replayed.send(OutboxMessage, message=message, staff_id=staff_id, request=request, **previous)
    from tasks.tasks import outbox_dispatch  # imported here: the task module imports this one

    enqueue_on_commit(outbox_dispatch)
    return True


def outbox_published_prune(*, now: datetime | None = None, batch_size: int = 1000) -> int:
    """Delete messages published more than OUTBOX_RETENTION_DAYS ago (they carry user ids; the broker
    has delivered them), in batches of `batch_size`, each its own short transaction, so the dispatcher and
    other writers never wait behind one long delete. Pending and dead messages stay. Returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    due = OutboxMessage.objects.filter(status=Status.PUBLISHED, published_at__lt=cutoff)
    pruned = 0
    while True:
        with transaction.atomic():
            locked = due.select_for_update(skip_locked=True).order_by("id")
            batch = list(locked.values_list("id", flat=True)[:batch_size])
            OutboxMessage.objects.filter(id__in=batch).delete()
        pruned += len(batch)
        if len(batch) < batch_size:
            break
    if pruned:
        log.info("outbox_published_pruned", count=pruned, retention_days=settings.OUTBOX_RETENTION_DAYS)
    return pruned
