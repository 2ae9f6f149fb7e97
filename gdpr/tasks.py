"""Thin Celery tasks of the gdpr queue: take a request id, call a service, schedule its retry."""

import uuid

from celery import shared_task

from gdpr.audit import audit_seal_pending
from gdpr.services import (
    Outcome,
    data_requests_alert_overdue,
    data_requests_sweep,
    erasure_process,
    export_process,
    exports_purge,
)
from tasks.base import BaseTask
from tasks.queues import TaskQueue


def _schedule_retry(task: BaseTask, request_id: str, outcome: Outcome | None) -> str | None:
    """A request waiting for a retry runs again after its backoff (the sweeper also catches it)."""
    if outcome is None:
        return None
    if outcome.retry_in is not None:
        task.apply_async(args=(request_id,), countdown=outcome.retry_in)
    return outcome.status


@shared_task(bind=True, base=BaseTask, name="gdpr.export_process", queue=TaskQueue.GDPR)
def export_process_task(self: BaseTask, request_id: str) -> str | None:
    """Build one export archive (safe to run twice: the claim decides)."""
    return _schedule_retry(self, request_id, export_process(request_id=uuid.UUID(request_id)))


@shared_task(bind=True, base=BaseTask, name="gdpr.erasure_process", queue=TaskQueue.GDPR)
def erasure_process_task(self: BaseTask, request_id: str) -> str | None:
    """Run one erasure's unfinished steps (safe to run twice: the claim decides)."""
    return _schedule_retry(self, request_id, erasure_process(request_id=uuid.UUID(request_id)))


@shared_task(base=BaseTask, name="gdpr.sweep", queue=TaskQueue.GDPR)
def data_requests_sweep_task() -> int:
    """Beat: re-enqueue requests no worker picked up or whose worker died; redact published events."""
    return data_requests_sweep()


@shared_task(base=BaseTask, name="gdpr.purge_exports", queue=TaskQueue.GDPR)
def exports_purge_task() -> int:
    """Beat: delete export files past their download window, and withdrawn ones."""
    return exports_purge()


@shared_task(base=BaseTask, name="gdpr.alert_overdue", queue=TaskQueue.GDPR)
def data_requests_alert_overdue_task() -> int:
    """Beat: metric and error log for requests still open close to the one-month limit."""
    return data_requests_alert_overdue()


@shared_task(base=BaseTask, name="gdpr.audit_seal", queue=TaskQueue.GDPR)
def audit_seal_task() -> int:
    """Beat: chain the audit events appended since the last run (all of them, batch by batch)."""
    sealed = 0
    while batch := audit_seal_pending():
        sealed += batch
    return sealed
