import uuid

from celery import shared_task

from entitlements.services import (
    entitlements_cache_versions_bump,
    entitlements_refresh_lapsed,
    entitlements_refresh_plan_subscribers,
)
from tasks.base import BaseTask
from tasks.queues import TaskQueue


@shared_task(base=BaseTask, name="entitlements.bump_cache_versions", queue=TaskQueue.DEFAULT)
def entitlements_cache_bump_task(user_ids: list[str]) -> None:
    """Retry a cache-version bump that failed after commit (BaseTask backs off while Redis is down)."""
    entitlements_cache_versions_bump(user_ids=[uuid.UUID(user_id) for user_id in user_ids])


@shared_task(base=BaseTask, name="entitlements.refresh_lapsed", queue=TaskQueue.DEFAULT)
def entitlements_refresh_lapsed_task() -> int:
    """Beat, every minute: refresh users whose grant ended by time (no webhook says so)."""
    return entitlements_refresh_lapsed()


@shared_task(base=BaseTask, name="entitlements.refresh_plan_subscribers", queue=TaskQueue.DEFAULT)
def entitlements_refresh_plan_subscribers_task(plan_ids: list[str]) -> int:
    """After a catalog import changed these plans' seats or features: refresh their subscribers' families."""
    return entitlements_refresh_plan_subscribers(plan_ids=[uuid.UUID(plan_id) for plan_id in plan_ids])
