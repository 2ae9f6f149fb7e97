"""The base of every Celery task: retries only what can recover, logs and measures every run."""

import time
from collections.abc import Callable
from typing import Any

import celery
import sentry_sdk
import structlog
from celery.exceptions import Retry
from django.db import transaction
from prometheus_client import Counter, Histogram

from tasks.errors import is_transient
from tasks.models import RetryPolicy

log = structlog.get_logger(__name__)

TASK_RUNS = Counter("payments_task_runs_total", "Celery task runs by outcome", ["task", "outcome"])
TASK_DURATION = Histogram("payments_task_duration_seconds", "Celery task run time", ["task"])


class BaseTask(celery.Task):
    """Every task uses this: exponential backoff with jitter and a cap, for transient errors only."""

    retry_policy = RetryPolicy(max_attempts=9, base_seconds=2, max_seconds=600)
    max_retries = None  # retry_policy decides

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(task_id=self.request.id, task_name=self.name)
        sentry_sdk.set_tag("celery_task", self.name)
        started = time.perf_counter()
        outcome = "success"
        try:
            try:
                return super().__call__(*args, **kwargs)
            except Exception as exc:
                attempt = self.request.retries + 1
                if is_transient(exc) and attempt < self.retry_policy.max_attempts:
                    raise self.retry(exc=exc, countdown=self.retry_policy.backoff(attempt)) from exc
                raise
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
