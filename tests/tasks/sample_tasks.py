"""Tasks for exercising the base task with a real worker (loaded with `celery worker --include`)."""

import gc
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.core.cache import cache

from tasks.base import BaseTask
from tasks.errors import TransientError
from tasks.queues import TaskQueue


@shared_task(base=BaseTask, name="default.test_flaky", queue=TaskQueue.DEFAULT)
def flaky(key: str, failures: int) -> None:
    """Fails transiently `failures` times, then succeeds."""
    runs = cache.incr(f"{key}:runs") if cache.add(f"{key}:runs", 1) is False else 1
    if runs <= failures:
        raise TransientError(f"attempt {runs} failed")
    cache.set(f"{key}:done", runs)


@shared_task(base=BaseTask, name="default.test_broken", queue=TaskQueue.DEFAULT)
def broken(key: str) -> None:
    """A bug: retrying it cannot help."""
    cache.add(f"{key}:runs", 0)
    cache.incr(f"{key}:runs")
    raise ValueError("bad data")


@shared_task(base=BaseTask, name="default.test_slow", queue=TaskQueue.DEFAULT)
def slow(key: str, seconds: float) -> None:
    """Records that it started, works for a while on its first run, then records that it finished."""
    cache.add(f"{key}:runs", 0)
    runs = cache.incr(f"{key}:runs")
    if runs == 1:
        time.sleep(seconds)
    cache.incr(f"{key}:done") if not cache.add(f"{key}:done", 1) else None


@shared_task(base=BaseTask, name="default.test_stubborn", queue=TaskQueue.DEFAULT)
def stubborn(key: str) -> None:
    """Like `slow`, but its first run ignores the soft time limit: only the hard limit ends it."""
    cache.add(f"{key}:runs", 0)
    if cache.incr(f"{key}:runs") == 1:
        until = time.monotonic() + 60
        while time.monotonic() < until:
            try:
                time.sleep(until - time.monotonic())
            except SoftTimeLimitExceeded:
                continue
    cache.incr(f"{key}:done") if not cache.add(f"{key}:done", 1) else None


@shared_task(base=BaseTask, name="default.test_gc_frozen", queue=TaskQueue.DEFAULT)
def gc_frozen(key: str) -> None:
    """Records how many objects the pool process keeps out of the garbage collector's scans."""
    cache.set(key, gc.get_freeze_count())
