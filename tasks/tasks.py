from celery import shared_task

from tasks.base import BaseTask
from tasks.outbox import outbox_dispatch_pending
from tasks.queues import TaskQueue


@shared_task(base=BaseTask, name="outbox.dispatch", queue=TaskQueue.OUTBOX)
def outbox_dispatch() -> int:
    """Publish due outbox messages; nudged after each commit that emits and by beat."""
    return outbox_dispatch_pending()
