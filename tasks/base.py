"""The base of every Celery task: retries only what can recover, logs and measures every run."""

import atexit
import contextvars
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import celery
import sentry_sdk
import structlog
from billiard.pool import SIG_SOFT_TIMEOUT
from billiard.process import current_process
from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.signals import before_task_publish, task_prerun
from django.conf import settings
from django.db import transaction
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from tasks.errors import is_transient
from tasks.models import RetryPolicy

log = structlog.get_logger(__name__)

TASK_RUNS = Counter("payments_task_runs_total", "Celery task runs by outcome", ["task", "outcome"])
TASK_DURATION = Histogram("payments_task_duration_seconds", "Celery task run time", ["task"])
# What the "periodic task late" alert compares with the beat schedule (payments_beat_schedule_interval_seconds).
TASK_LAST_SUCCESS = Gauge(
    "payments_task_last_success_timestamp_seconds",
    "When a run of the task last succeeded (Unix time)",
    ["task"],
    multiprocess_mode="max",
)


class BaseTask(celery.Task):
    """Every task uses this: exponential backoff with jitter and a cap, for transient errors only."""

    retry_policy = RetryPolicy(max_attempts=9, base_seconds=2, max_seconds=600)
    max_retries = None  # retry_policy decides

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(task_id=self.request.id, task_name=self.name)
        if request_id := getattr(self.request, "request_id", None):  # the request that caused it
            structlog.contextvars.bind_contextvars(request_id=request_id)
        if (span := trace.get_current_span().get_span_context()).is_valid:  # Celery's span; kept for its last lines
            structlog.contextvars.bind_contextvars(trace_id=trace.format_trace_id(span.trace_id))
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
            if outcome == "success":
                TASK_LAST_SUCCESS.labels(self.name).set_to_current_time()


@task_prerun.connect(dispatch_uid="tasks.one_soft_limit_notice")
def _one_soft_limit_notice(**_: Any) -> None:
    """A run past its soft time limit gets SoftTimeLimitExceeded once. Celery's prefork pool can signal
    it twice in a row; the second would land in the code recording the first (a durable job's failure,
    mid-query) and break its database connection, so the failure would not be recorded."""
    if SIG_SOFT_TIMEOUT is None or current_process().name == "MainProcess":
        return  # only a prefork child gets the signal (the main process uses SIGUSR1 for its traceback dump)
    if threading.current_thread() is not threading.main_thread():
        return
    noticed = False

    def notice(signum: int, frame: object) -> None:
        nonlocal noticed
        if not noticed:
            noticed = True
            raise SoftTimeLimitExceeded()

    signal.signal(SIG_SOFT_TIMEOUT, notice)


@before_task_publish.connect(dispatch_uid="tasks.carry_request_id")
def _carry_request_id(headers: dict[str, Any], **_: Any) -> None:
    """A task sent while handling a request (or a task that one caused) carries its request id along."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        headers.setdefault("request_id", request_id)


def enqueue_on_commit(task: celery.Task, *args: Any) -> None:
    """Send `task(*args)` once the current transaction commits; never for a rolled-back one.

    Best effort by design, and never on the caller's time: the send is handed to this process's
    publisher thread (_Publisher), so a broker that is down, blocked (its memory alarm) or hung costs a
    request nothing. What was committed is in the database; the beat sweepers deliver it if a nudge is lost.
    """
    # The sender's context (its trace, its request id) goes with the task, wherever the send runs.
    context = contextvars.copy_context()
    on_commit: Callable[..., None] = transaction.on_commit
    on_commit(lambda: _publisher.submit(context, task, args), robust=True)


# The publisher thread's bounds: a send may wait this long for the broker (connect, write, confirm) ...
PUBLISH_TIMEOUT_SECONDS = 2.0
# ... and this many sends may wait for it; past that a nudge is dropped (logged), the sweepers cover it.
PUBLISH_BACKLOG = 1000

NUDGES_DROPPED = Counter(
    "payments_task_nudges_dropped_total", "Task sends after commit dropped (the sweepers deliver them)", ["task"]
)


class _Publisher:
    """One daemon thread per process that sends the tasks enqueued on commit, in rounds at most one per
    TASK_SEND_LINGER_SECONDS, one send at a time, each with bounded waits. Started on first use and again in
    a forked child (a thread does not survive fork)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[contextvars.Context, celery.Task, tuple[Any, ...]]] = queue.Queue(
            PUBLISH_BACKLOG
        )
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, context: contextvars.Context, task: celery.Task, args: tuple[Any, ...]) -> None:
        self._ensure_running()
        try:
            self._queue.put_nowait((context, task, args))
        except queue.Full:
            NUDGES_DROPPED.labels(task.name).inc()
            log.warning("task_send_dropped", task=task.name, reason="publisher backlog full")

    def join(self, timeout: float) -> bool:
        """Wait until every submitted send was tried (tests, and a graceful shutdown); whether it was."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _ensure_running(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.Queue(PUBLISH_BACKLOG)  # a forked child's copy holds its parent's sends
                threading.Thread(target=self._run, name="task-publisher", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        last_round = -float("inf")
        while True:
            pending = [self._queue.get()]
            # A round starts at once after a quiet spell, and at most once per linger otherwise: what is
            # submitted meanwhile joins it, so a burst of nudges costs a message per linger, not one each.
            # Held, never dropped: every submit is sent in the round that follows it (issue 17).
            # The linger is slept through, not waited out on the queue: a get per submit woke this thread
            # once per request (about 4% of a webhook delivery's Python time went to those wake-ups).
            if (wait := last_round + settings.TASK_SEND_LINGER_SECONDS - time.monotonic()) > 0:
                time.sleep(wait)
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            last_round = time.monotonic()
            sent: set[tuple[str, str]] = set()
            for context, task, args in pending:
                # Identical sends coalesce: each was submitted after its commit, and the one send made now
                # follows all those commits (a burst of drain or outbox nudges costs one message, not one each).
                if (key := (task.name, repr(args))) in sent:
                    continue
                sent.add(key)
                try:
                    context.run(self._send, task, args)
                except Exception:
                    NUDGES_DROPPED.labels(task.name).inc()
                    log.warning("task_send_failed", task=task.name, exc_info=True)
            for _ in pending:
                self._queue.task_done()

    @staticmethod
    def _send(task: celery.Task, args: tuple[Any, ...]) -> None:
        # kombu's publish options (the stubs do not know them): bounded write and confirm waits.
        bounded: dict[str, Any] = {"timeout": PUBLISH_TIMEOUT_SECONDS, "confirm_timeout": PUBLISH_TIMEOUT_SECONDS}
        task.apply_async(args=args, retry=True, retry_policy={"max_retries": 1, "interval_start": 0}, **bounded)


_publisher = _Publisher()
# A process that exits gracefully (gunicorn's worker restart, a worker's warm shutdown) sends what it holds.
atexit.register(lambda: _publisher.join(PUBLISH_TIMEOUT_SECONDS))


def sends_flush(timeout: float = 5.0) -> bool:
    """Wait until every task enqueued on commit in this process has been sent (or given up on)."""
    return _publisher.join(timeout)
