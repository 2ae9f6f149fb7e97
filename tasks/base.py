"""The base of every Celery task: retries only what can recover, logs and measures every run."""

import random
import time
from collections.abc import Callable
from typing import Any

import celery
import kombu.exceptions
import sentry_sdk
import structlog
from celery.exceptions import Retry
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from prometheus_client import Counter, Histogram

from tasks.errors import TransientError

log = structlog.get_logger(__name__)

# Errors a later attempt may not meet: a dependency down or slow. Anything else is a bug or bad
# data, and retrying it only delays the failure.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)

TASK_RUNS = Counter("payments_task_runs_total", "Celery task runs by outcome", ["task", "outcome"])
TASK_DURATION = Histogram("payments_task_duration_seconds", "Celery task run time", ["task"])


class BaseTask(celery.Task):
    """Every task uses this: exponential backoff with jitter and a cap, for transient errors only."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = settings.TASK_RETRY_BACKOFF_SECONDS
    retry_backoff_max = settings.TASK_RETRY_BACKOFF_MAX_SECONDS
    retry_jitter = True
    max_retries = settings.TASK_MAX_RETRIES

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(task_id=self.request.id, task_name=self.name)
        sentry_sdk.set_tag("celery_task", self.name)
        started = time.perf_counter()
        outcome = "success"
        try:
            return super().__call__(*args, **kwargs)
        except Retry:
            outcome = "retry"
            log.warning("task_retrying", retries=self.request.retries)
            raise
        except Exception:
            outcome = "failure"
            log.exception("task_failed", retries=self.request.retries)
            raise
        finally:
            TASK_RUNS.labels(self.name, outcome).inc()
            TASK_DURATION.labels(self.name).observe(time.perf_counter() - started)


def enqueue_on_commit(task: celery.Task, *args: Any) -> None:
    """Send `task(*args)` once the current transaction commits; never for a rolled-back one.

    Best effort by design: if the broker is down the error is logged and the beat sweepers pick
    the work up from the database, so a request never fails because a nudge could not be sent.
    """

    def send() -> None:
        task.apply_async(args=args, retry=True, retry_policy={"max_retries": 1, "interval_start": 0})

    on_commit: Callable[..., None] = transaction.on_commit
    on_commit(send, robust=True)


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, never above cap."""
    step = min(cap, base * 2 ** max(attempt - 1, 0))
    return step / 2 + random.uniform(0, step / 2)
