"""The durable-job primitive (tasks.models.DurableJob): claim a job, record a failed run (a retry with
backoff, or dead), find what is due, and sweep it back into the queue. The webhook inbox, GDPR requests
and the outbox run on it."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from payments_project.raw_rows import row_converter
from tasks.errors import is_transient
from tasks.models import DurableJob

J = TypeVar("J", bound=DurableJob)

WORKER_LOST = "its worker was lost: the lease ran out mid-run"


def lease() -> timedelta:
    """A minute past the task time limit: a worker still running by then has been killed."""
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


def claim(jobs: QuerySet[J], *, reclaim_running: bool = False, **also: Any) -> bool:
    """Take the one job in `jobs` for this worker if it is waiting, or running under a lease that ran out.
    The attempt is counted and the lease set in one statement: call it outside any transaction, so a
    worker that dies mid-run (or a job that kills workers) still uses up an attempt.

    `reclaim_running`: take a running job even under its lease, for a run that holds the row lock
    (`SELECT … FOR UPDATE SKIP LOCKED`) while it works: the lock keeps two runs apart, and a task
    redelivered after its worker died need not wait for the lease. `also`: more columns to set.
    """
    return claim_returning(jobs, ("pk",), reclaim_running=reclaim_running, **also) is not None


def claim_returning(
    jobs: QuerySet[J], fields: Sequence[str], *, reclaim_running: bool = False, **also: Any
) -> dict[str, Any] | None:
    """claim(), also reading `fields` of the claimed job in the same statement (`UPDATE … RETURNING`): what
    the run needs before its transaction costs no second round trip. None when the job was not taken."""
    claimed = _claim(_claimable(jobs, reclaim_running=reclaim_running), fields, also)
    return claimed[0] if claimed else None


def claim_batch(
    jobs: QuerySet[J], fields: Sequence[str], *, limit: int, order_by: str, reclaim_running: bool = False
) -> list[dict[str, Any]]:
    """claim_returning() for up to `limit` jobs of `jobs` at once, in `order_by` order: one
    `UPDATE … WHERE pk IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING` and one commit for the whole
    batch, each job's attempt counted and its lease set as claim() does. A job another worker is claiming
    or running is skipped, never waited for. Call it outside any transaction, as claim()."""
    candidates = _claimable(jobs, reclaim_running=reclaim_running).select_for_update(skip_locked=True)
    batch = jobs.model._default_manager.filter(pk__in=candidates.order_by(order_by).values("pk")[:limit])
    with transaction.atomic(using=jobs.db):  # Django compiles FOR UPDATE only inside a transaction
        claimed = _claim(batch, [*fields, order_by], {})
    # RETURNING comes back in whatever order the UPDATE met the rows, not the subquery's.
    claimed.sort(key=lambda row: row.pop(order_by))
    return claimed


def _claimable(jobs: QuerySet[J], *, reclaim_running: bool) -> QuerySet[J]:
    statuses, now = jobs.model.statuses, timezone.now()
    if statuses.running is None:
        return jobs.filter(status__in=statuses.waiting)
    expired = Q() if reclaim_running else Q(status__in=statuses.waiting) | Q(lease_until__lt=now)
    # The statuses stand alone in the WHERE, not only inside an OR: the planner then walks the model's partial
    # index on what is due in claim_batch's order and stops at its limit. Behind the OR alone it read and
    # sorted every waiting row for each claim: a drain's backlog cost O(backlog) per batch.
    return jobs.filter(expired, status__in=[*statuses.waiting, statuses.running])


def _claim(claimable: QuerySet[J], fields: Sequence[str], also: dict[str, Any]) -> list[dict[str, Any]]:
    statuses, now = claimable.model.statuses, timezone.now()
    update = claimable.query.chain(UpdateQuery)
    assert isinstance(update, UpdateQuery)
    update.add_update_values(
        {"status": statuses.running, "attempts": F("attempts") + 1, "lease_until": now + lease(), **also}
    )
    sql, params = update.get_compiler(claimable.db).as_sql()
    connection = connections[claimable.db]
    meta = claimable.model._meta
    columns = [meta.pk if name == "pk" else meta.get_field(name) for name in fields]
    quoted = ", ".join(connection.ops.quote_name(str(column.column)) for column in columns)  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {quoted}", params)
        rows = cursor.fetchall()
    convert = row_converter(connection, columns)  # what the ORM would make of each value
    return [dict(zip(fields, convert(row), strict=True)) for row in rows]


def record_failure(
    job: DurableJob, exc: BaseException, *, attempts: int | None = None, error: str = ""
) -> float | None:
    """Set `job` after a failed run, unsaved (the caller saves outcome_fields() and its own columns): back
    to waiting with backoff if `exc` is transient and attempts remain, dead otherwise. Returns the seconds
    until the next attempt, or None when the job is dead.

    `attempts`: the count that decides, when it is not the job's own (a GDPR erasure counts per step).
    `error`: the text to keep, when there is more to say than the exception.
    """
    tried = job.attempts if attempts is None else attempts
    error = error or error_text(exc)
    if is_transient(exc) and tried < job.retry_policy.max_attempts:
        return back_off(job, attempt=tried, error=error)
    job.status, job.last_error = job.statuses.dead, error
    _release(job)
    return None


def back_off(job: DurableJob, *, attempt: int, error: str) -> float:
    """Set `job` (unsaved) waiting until the backoff after its `attempt`-th run has passed; returns it."""
    delay = job.retry_policy.backoff(attempt)
    job.status, job.last_error = job.statuses.retrying, error
    job.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    _release(job)
    return delay


def _release(job: DurableJob) -> None:
    if job.statuses.running is not None:
        job.lease_until = None


def outcome_fields(model: type[DurableJob]) -> list[str]:
    """The columns a run's outcome sets (and record_failure, back_off), for save(update_fields=...)."""
    fields = ["status", "next_attempt_at", "last_error"]
    return [*fields, "lease_until"] if model.statuses.running is not None else fields


def due(model: type[J], *, now: datetime | None = None) -> QuerySet[J]:
    """The jobs to run now: waiting and due, or running under a lease that ran out (the worker died)."""
    now = now or timezone.now()
    statuses = model.statuses
    waiting = Q(status__in=statuses.waiting, next_attempt_at__lte=now)
    if statuses.running is None:
        return model._default_manager.filter(waiting)
    return model._default_manager.filter(waiting | Q(status=statuses.running, lease_until__lt=now))


def sweep(model: type[J], *, grace: timedelta, batch: int = 500) -> list[Any]:
    """Take the due jobs (never picked up, a retry whose backoff passed, a dead worker's) for re-enqueueing,
    in the caller's transaction; returns their primary keys. A job whose lease ran out goes back to waiting,
    its used attempt still counted. Each is pushed `grace` ahead, so a slow queue is not flooded with copies.
    """
    now = timezone.now()
    rows = list(
        due(model, now=now)
        .select_for_update(skip_locked=True)
        .order_by("next_attempt_at")
        .values_list("pk", "status")[:batch]
    )
    lost = [pk for pk, status in rows if status == model.statuses.running]
    if lost:
        model._default_manager.filter(pk__in=lost).update(
            status=model.statuses.retrying, lease_until=None, last_error=WORKER_LOST
        )
    swept = [pk for pk, _ in rows]
    model._default_manager.filter(pk__in=swept).update(next_attempt_at=now + grace)
    return swept
