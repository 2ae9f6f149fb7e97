from celery import shared_task

from billing.services import orders_resolve_abandoned
from tasks.base import BaseTask
from tasks.queues import TaskQueue


@shared_task(base=BaseTask, name="billing.resolve_abandoned_orders", queue=TaskQueue.DEFAULT)
def orders_resolve_abandoned_task() -> int:
    """Beat: settle checkouts left `pending` by a request that died mid-way."""
    return orders_resolve_abandoned()
