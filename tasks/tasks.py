from celery import shared_task

from tasks.base import BaseTask
from tasks.outbox import outbox_dispatch_pending
from tasks.outbox_ops import outbox_health_measure
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
