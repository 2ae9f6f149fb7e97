from celery import shared_task

from tasks.base import BaseTask
from tasks.outbox import outbox_dispatch_pending
from tasks.outbox_ops import outbox_health_measure, outbox_published_prune
from tasks.queues import TaskQueue


@shared_task(base=BaseTask, name="outbox.dispatch", queue=TaskQueue.OUTBOX)
def outbox_dispatch() -> int:
    """Publish due outbox messages; nudged after each commit that emits and by beat. A run in which a
    publish failed is reported failed (the messages themselves back off in the outbox)."""
    return outbox_dispatch_pending(raise_on_failure=True)


@shared_task(base=BaseTask, name="outbox.measure", queue=TaskQueue.OUTBOX)
def outbox_measure() -> dict[str, float]:
    """Beat: the outbox's backlog, oldest waiting message and dead messages, as metrics."""
    return outbox_health_measure()


@shared_task(base=BaseTask, name="outbox.prune", queue=TaskQueue.OUTBOX)
def outbox_prune() -> int:
    """Beat, hourly: delete messages published more than OUTBOX_RETENTION_DAYS ago, in batches."""
    return outbox_published_prune()
