from celery import shared_task

from billing.services import orders_resolve_abandoned, refunds_resolve_stuck
from tasks.base import BaseTask
from tasks.queues import TaskQueue


@shared_task(base=BaseTask, name="billing.resolve_abandoned_orders", queue=TaskQueue.DEFAULT)
def orders_resolve_abandoned_task() -> int:
    """Beat: settle checkouts left `pending` by a request that died mid-way."""
    return orders_resolve_abandoned()


@shared_task(base=BaseTask, name="billing.resolve_stuck_refunds", queue=TaskQueue.DEFAULT)
def refunds_resolve_stuck_task() -> int:
    """Beat: settle refunds left `requested` (Stripe down, or the request died) with their own Stripe key."""
    return refunds_resolve_stuck()
