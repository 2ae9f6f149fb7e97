"""Data-subject requests: opened by the user, retried or canceled by compliance staff, swept and watched by beat."""

import uuid
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import Gauge

from gdpr.audit import ActorType, AuditAction
from gdpr.errors import ErasureInProgress
from gdpr.models import OPEN_REQUEST, DataSubjectRequest, RequestKind, RequestStatus, StepStatus
from gdpr.registry import normalised_email, pseudonym_for
from gdpr.selectors import data_requests_overdue
from gdpr.services._shared import REQUESTS_TOTAL, pickup_grace, request_audit, request_enqueue
from payments_project.errors import Conflict
from tasks.jobs import sweep
from tasks.models import OutboxMessage

log = structlog.get_logger(__name__)


REQUESTS_OVERDUE = Gauge(
    "payments_gdpr_requests_overdue", "GDPR requests still open past the alert age", ["kind"], multiprocess_mode="max"
)
_REQUESTED = {
    RequestKind.EXPORT: AuditAction.GDPR_EXPORT_REQUESTED,
    RequestKind.ERASURE: AuditAction.GDPR_ERASURE_REQUESTED,
}


@transaction.atomic(durable=True)
def data_request_create(
    *, kind: RequestKind, user_id: uuid.UUID, email: str, request: HttpRequest | None = None
) -> tuple[DataSubjectRequest, bool]:
    """Open an export or erasure request for the caller, or return the one already open (False).

    One open request per person and kind, decided by the partial unique constraint (two requests at
    once make one row). An export is refused while an erasure is open: its archive would be emptied, or
    hold data that is being erased. The job is enqueued on commit; the sweeper catches a lost message.
    """
    subject = pseudonym_for(user_id)
    email = normalised_email(email)  # a verified claim (the view's job), an address at all, or nothing
    if (
        kind == RequestKind.EXPORT
        and DataSubjectRequest.objects.filter(OPEN_REQUEST, subject=subject, kind=RequestKind.ERASURE).exists()
    ):
        raise ErasureInProgress("Your data is being erased; an export is not possible any more")
    try:
        with transaction.atomic():
            created = DataSubjectRequest.objects.create(
                kind=kind,
                subject=subject,
                user_id=user_id,
                email=email,
                next_attempt_at=timezone.now() + pickup_grace(),
            )
    except IntegrityError:
        existing = DataSubjectRequest.objects.filter(OPEN_REQUEST, subject=subject, kind=kind).first()
        if existing is None:  # it finished between our insert and this read: a new one may be opened now
            raise Conflict("Your previous request just finished; send this one again") from None
        return existing, False
    request_audit(
        _REQUESTED[RequestKind(kind)], created, actor_type=ActorType.USER, actor_id=str(user_id), request=request
    )
    REQUESTS_TOTAL.labels(kind, "requested").inc()
    request_enqueue(created.id, created.kind)
    return created, True


# --- Compliance staff: retry and cancel --------------------------------------------------------------------


@transaction.atomic(durable=True)
def data_request_retry(*, request_id: uuid.UUID, staff_id: str, request: HttpRequest | None = None) -> bool:
    """Run a failed request again: its failed steps start over with fresh attempts, finished ones are
    skipped. False if it is not failed. Conflict if the user has opened another export meanwhile."""
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.FAILED:
        return False
    now = timezone.now()
    data_request.status, data_request.next_attempt_at = RequestStatus.PENDING, now + pickup_grace()
    data_request.updated_at = now
    previous_reason, data_request.last_error = data_request.last_error, ""
    try:
        with transaction.atomic():
            data_request.save(update_fields=["status", "next_attempt_at", "updated_at", "last_error"])
    except IntegrityError:
        raise Conflict("The user has opened another request of this kind; retry that one instead") from None
    data_request.steps.filter(status=StepStatus.FAILED).update(status=StepStatus.PENDING, attempts=0, updated_at=now)
    request_audit(
        AuditAction.GDPR_REQUEST_RETRIED,
        data_request,
        actor_type=ActorType.STAFF,
        actor_id=staff_id,
        metadata={"previous_status": RequestStatus.FAILED, "had_reason": bool(previous_reason)},
        request=request,
    )
    request_enqueue(data_request.id, data_request.kind)
    return True


@transaction.atomic(durable=True)
def data_request_cancel(*, request_id: uuid.UUID, staff_id: str, request: HttpRequest | None = None) -> bool:
    """Withdraw a request that is waiting or failed (or a finished export's download). False otherwise:
    a running step cannot be stopped halfway; cancel it once it has finished or failed.

    What an erasure already erased stays erased. A withdrawn export's file is deleted by the purge job.
    """
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    cancelable = {RequestStatus.PENDING, RequestStatus.FAILED}
    if data_request.kind == RequestKind.EXPORT:
        cancelable.add(RequestStatus.COMPLETED)
    if data_request.status not in cancelable:
        return False
    previous = data_request.status
    data_request.status, data_request.lease_until, data_request.updated_at = (
        RequestStatus.CANCELED,
        None,
        timezone.now(),
    )
    data_request.save(update_fields=["status", "lease_until", "updated_at"])
    request_audit(
        AuditAction.GDPR_REQUEST_CANCELED,
        data_request,
        actor_type=ActorType.STAFF,
        actor_id=staff_id,
        metadata={"previous_status": previous},
        request=request,
    )
    return True


# --- Beat jobs ---------------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def data_requests_sweep() -> int:
    """Re-enqueue requests that are due: no worker picked them up (a lost message, a broker outage), their
    retry is due, or their worker died (tasks.jobs.sweep); then strip the user id from published
    `gdpr.erasure.completed` messages. Returns how many requests were re-enqueued."""
    due = sweep(DataSubjectRequest, grace=pickup_grace())
    for request_id, kind in DataSubjectRequest.objects.filter(id__in=due).values_list("id", "kind"):
        request_enqueue(request_id, kind)
    _erasure_events_redact()
    return len(due)


def _erasure_events_redact() -> int:
    announced = DataSubjectRequest.objects.filter(
        kind=RequestKind.ERASURE, completion_event_id__isnull=False, completion_event_redacted_at__isnull=True
    )
    published = set(
        OutboxMessage.objects.filter(
            id__in=announced.values("completion_event_id"), published_at__isnull=False
        ).values_list("id", flat=True)
    )
    redacted = 0
    for data_request in announced.filter(completion_event_id__in=published).select_for_update(skip_locked=True):
        for message in OutboxMessage.objects.select_for_update().filter(id__in=[data_request.completion_event_id]):
            message.data = {**message.data, "user_id": None}
            message.save(update_fields=["data"])
        data_request.completion_event_redacted_at = timezone.now()
        data_request.save(update_fields=["completion_event_redacted_at"])
        redacted += 1
    return redacted


def data_requests_alert_overdue(*, now: datetime | None = None) -> int:
    """Metric and error log for every request still open GDPR_OVERDUE_ALERT_DAYS after it was made
    (the legal limit is a month); returns how many there are."""
    now = now or timezone.now()
    overdue = list(
        data_requests_overdue(created_before=now - timedelta(days=settings.GDPR_OVERDUE_ALERT_DAYS)).values_list(
            "id", "kind", "status", "created_at"
        )
    )
    for kind in RequestKind:
        REQUESTS_OVERDUE.labels(kind.value).set(sum(1 for _, k, _, _ in overdue if k == kind))
    if overdue:
        log.error(
            "gdpr_requests_overdue",
            count=len(overdue),
            oldest_created_at=overdue[0][3].isoformat(),
            requests=[f"{kind}:{request_id}:{status}" for request_id, kind, status, _ in overdue[:50]],
        )
    return len(overdue)
