import uuid

from celery import shared_task

from tasks.base import BaseTask
from tasks.queues import TaskQueue
from webhooks.reconciliation import events_gap_fill, state_compare
from webhooks.services import (
    webhook_event_process,
    webhook_events_drain,
    webhook_events_prune,
    webhook_events_sweep,
    webhook_payloads_purge,
)


@shared_task(base=BaseTask, name="webhooks.process_event", queue=TaskQueue.WEBHOOKS)
def webhook_event_process_task(event_id: str) -> str | None:
    """Process one inbox row (safe to run twice: the claim decides). Events are nudged to the drain now;
    this runs the messages queued before it, and one named event when a person or a test asks."""
    return webhook_event_process(event_id=uuid.UUID(event_id))


@shared_task(base=BaseTask, bind=True, name="webhooks.drain", queue=TaskQueue.WEBHOOKS)
def webhook_events_drain_task(self: BaseTask) -> int:
    """Process the waiting events; nudged after each commit that stores or wakes one, and by the sweeper.
    A redelivered run (its worker died mid-batch) takes back at once what that worker had claimed."""
    return webhook_events_drain(reclaim=bool((self.request.delivery_info or {}).get("redelivered")))


@shared_task(base=BaseTask, name="webhooks.sweep", queue=TaskQueue.WEBHOOKS)
def webhook_events_sweep_task() -> int:
    """Beat: nudge a drain when events are due (missed nudges, retries, dead workers)."""
    return webhook_events_sweep()


@shared_task(base=BaseTask, name="reconciliation.events_gap_fill", queue=TaskQueue.RECONCILIATION)
def events_gap_fill_task() -> int:
    """Beat: pull Stripe events the inbox misses (rate limits and outages retry with backoff, resuming
    from the cursor, which kept every stored page)."""
    return events_gap_fill().events_new


@shared_task(base=BaseTask, name="reconciliation.state_compare", queue=TaskQueue.RECONCILIATION)
def state_compare_task() -> int:
    """Nightly: compare recently changed subscriptions and payments with Stripe."""
    return state_compare().opened


@shared_task(base=BaseTask, name="webhooks.purge_raw_payloads", queue=TaskQueue.WEBHOOKS)
def webhook_payloads_purge_task() -> int:
    """Daily: redact raw bodies past WEBHOOK_PAYLOAD_RETENTION_DAYS, and those of Stripe-deleted customers."""
    return webhook_payloads_purge()


@shared_task(base=BaseTask, name="webhooks.prune_inbox", queue=TaskQueue.WEBHOOKS)
def webhook_events_prune_task() -> int:
    """Daily: delete processed and ignored inbox rows older than WEBHOOK_INBOX_RETENTION_DAYS, in batches."""
    return webhook_events_prune()
