"""Writes of the gdpr app: erasure of the audit trail's personal side data, and data-subject requests.

The audit trail itself is appended by gdpr.audit.record. Export and erasure run through the providers in
gdpr.registry (each app registers its own); this module imports no other app.

Lock order: a request row, then its step rows.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

import structlog
from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import IntegrityError, transaction
from django.db.models import Q, TextField, Value
from django.db.models.functions import Cast, Coalesce
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import Counter, Gauge

from gdpr.archive import build_archive
from gdpr.audit import ActorType, AuditAction, record
from gdpr.errors import ErasureInProgress, ExportExpired, ExportNotReady
from gdpr.models import (
    OPEN_REQUEST,
    AuditEventPersonal,
    DataSubjectRequest,
    ErasureStep,
    RequestKind,
    RequestStatus,
    StepStatus,
)
from gdpr.registry import (
    DataSubject,
    Tables,
    provider_named,
    providers,
    pseudonym_for,
)
from gdpr.selectors import data_request_get_for_user, data_requests_overdue
from payments_project.errors import Conflict
from tasks.base import enqueue_on_commit
from tasks.jobs import back_off, claim, error_text, outcome_fields, record_failure, sweep
from tasks.models import OutboxMessage
from tasks.outbox import emit

log = structlog.get_logger(__name__)


def audit_staff_session(
    *, action: AuditAction, user: Any = None, username: str = "", request: HttpRequest | None = None
) -> None:
    """Record an admin login, logout or failed login (called from the auth signals)."""
    with transaction.atomic():
        record(
            action=action,
            actor_type=ActorType.STAFF,
            actor_id=str(user.pk) if user is not None and user.pk is not None else "",
            target_type="admin_session",
            metadata={"username": username} if username else None,
            request=request,
        )


# --- Erasure in the audit trail: the personal side data only (the chain holds pseudonyms) ----------------


@transaction.atomic(durable=True)
def audit_personal_erase(*, subject: DataSubject) -> int:
    """Delete a data subject's personal data from the audit trail; return how many events lost theirs.

    The side rows (AuditEventPersonal) of every event the subject did go, ip and user agent included,
    and so do those of other people's events whose personal metadata names the subject (an invitation
    sent to their address). The chain holds only the subject's pseudonym and is not touched: it still
    verifies, and their events stay findable by the pseudonym.
    """
    naming = Q(event__actor_type=ActorType.USER, event__actor_id=subject.pseudonym)
    for identifier in subject.identifiers:
        naming |= Q(metadata_text__icontains=identifier)
    side = AuditEventPersonal.objects.annotate(metadata_text=Cast("metadata", output_field=TextField()))
    erased, _ = AuditEventPersonal.objects.filter(pk__in=side.filter(naming).values("pk")).delete()
    record(
        action=AuditAction.AUDIT_PERSONAL_ERASED,
        actor_type=ActorType.SYSTEM,
        target_type="audit_personal",
        target_id=subject.pseudonym,
        metadata={"events": erased},
    )
    return erased


# --- Data-subject requests: create -------------------------------------------------------------------------

REQUESTS_TOTAL = Counter("payments_gdpr_requests_total", "GDPR requests by kind and outcome", ["kind", "outcome"])
REQUESTS_OVERDUE = Gauge(
    "payments_gdpr_requests_overdue", "GDPR requests still open past the alert age", ["kind"], multiprocess_mode="max"
)
MAX_EMAIL_LENGTH = 254
_REQUESTED = {
    RequestKind.EXPORT: AuditAction.GDPR_EXPORT_REQUESTED,
    RequestKind.ERASURE: AuditAction.GDPR_ERASURE_REQUESTED,
}


def _request_audit(
    action: AuditAction,
    data_request: DataSubjectRequest,
    *,
    actor_type: ActorType = ActorType.SYSTEM,
    actor_id: str = "",
    metadata: Mapping[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> None:
    record(
        action=action,
        actor_type=actor_type,
        actor_id=actor_id,
        target_type="gdpr_request",
        target_id=str(data_request.id),
        metadata={"kind": data_request.kind, **(metadata or {})},
        request=request,
    )


def _enqueue(request_id: uuid.UUID, kind: str) -> None:
    from gdpr.tasks import erasure_process_task, export_process_task  # the task module imports this one

    task = export_process_task if kind == RequestKind.EXPORT else erasure_process_task
    enqueue_on_commit(task, str(request_id))


def _pickup_grace() -> timedelta:
    """How long a request waits for the worker its commit nudged before the sweeper sends another."""
    return timedelta(seconds=settings.GDPR_PICKUP_GRACE_SECONDS)


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
    email = email if len(email) <= MAX_EMAIL_LENGTH else ""  # the token's claim, unchecked: never a 500
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
                next_attempt_at=timezone.now() + _pickup_grace(),
            )
    except IntegrityError:
        existing = DataSubjectRequest.objects.filter(OPEN_REQUEST, subject=subject, kind=kind).first()
        if existing is None:  # it finished between our insert and this read: a new one may be opened now
            raise Conflict("Your previous request just finished; send this one again") from None
        return existing, False
    _request_audit(
        _REQUESTED[RequestKind(kind)], created, actor_type=ActorType.USER, actor_id=str(user_id), request=request
    )
    REQUESTS_TOTAL.labels(kind, "requested").inc()
    _enqueue(created.id, created.kind)
    return created, True


# --- Processing: claim, run, record the outcome ------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: str
    retry_in: float | None = None  # seconds until the next attempt, when one is due


def _claim(request_id: uuid.UUID, kind: RequestKind) -> DataSubjectRequest | None:
    """Take the request for this worker: pending, or running under a lease that ran out (a dead worker).
    Its steps run outside any transaction, so the lease, not a row lock, keeps a second worker out."""
    now = timezone.now()
    claimed = claim(
        DataSubjectRequest.objects.filter(id=request_id, kind=kind),
        started_at=Coalesce("started_at", Value(now)),
        updated_at=now,
    )
    return DataSubjectRequest.objects.get(id=request_id) if claimed else None


def _data_subject(data_request: DataSubjectRequest) -> DataSubject:
    if data_request.user_id is None:
        raise RuntimeError(f"request {data_request.id} has no user id any more")
    emails = {data_request.email, *data_request.known_emails} - {""}
    for provider in providers():
        emails |= {email for email in provider.emails(user_id=data_request.user_id) if email}
    return DataSubject(user_id=data_request.user_id, pseudonym=data_request.subject, emails=frozenset(emails))


EXPORT_STORAGE = "gdpr_exports"  # the STORAGES alias of export archives (settings: GDPR section)


def _export_storage() -> Storage:
    return storages[EXPORT_STORAGE]


def export_process(*, request_id: uuid.UUID) -> Outcome | None:
    """Gather every provider's data into the archive, store it, and mark the export completed.

    None when the request was not this worker's to run. On a transient error the request waits for a
    retry (Outcome.retry_in); out of attempts, or on any other error, it is failed with the reason.
    """
    data_request = _claim(request_id, RequestKind.EXPORT)
    if data_request is None:
        return None
    try:
        subject = _data_subject(data_request)
        tables: Tables = {}
        for provider in providers():
            for table, table_rows in provider.export(subject=subject).items():
                tables[f"{provider.name}.{table}"] = table_rows
        archive = build_archive(
            tables=tables,
            manifest={
                "request_id": str(data_request.id),
                "user_id": str(subject.user_id),
                "generated_at": timezone.now(),
            },
        )
        name = f"{data_request.id}.zip"
        storage = _export_storage()
        storage.delete(name)  # a rerun after a crash replaces its own file, never piles up copies
        try:
            stored = storage.save(name, File(archive.file, name=name))
        finally:
            archive.file.close()
    except Exception as exc:
        log.warning("gdpr_export_failed", request_id=str(request_id), error=error_text(exc))
        return _export_record_failure(request_id=request_id, exc=exc)
    counts = {table: len(table_rows) for table, table_rows in tables.items()}
    return _export_record_success(
        request_id=request_id, file_name=stored, size=archive.size, sha256=archive.sha256, counts=counts
    )


@transaction.atomic(durable=True)
def _export_record_success(
    *, request_id: uuid.UUID, file_name: str, size: int, sha256: str, counts: Mapping[str, int]
) -> Outcome:
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.RUNNING:  # canceled meanwhile: the file must not stay
        transaction.on_commit(lambda: _export_storage().delete(file_name))
        return Outcome(status=data_request.status)
    now = timezone.now()
    data_request.status, data_request.completed_at, data_request.lease_until = RequestStatus.COMPLETED, now, None
    data_request.file_name, data_request.file_size, data_request.file_sha256 = file_name, size, sha256
    data_request.expires_at = now + timedelta(hours=settings.GDPR_EXPORT_TTL_HOURS)
    data_request.last_error, data_request.updated_at = "", now
    data_request.save(
        update_fields=[
            *outcome_fields(DataSubjectRequest),
            "completed_at",
            "file_name",
            "file_size",
            "file_sha256",
            "expires_at",
            "updated_at",
        ]
    )
    _request_audit(AuditAction.GDPR_EXPORT_COMPLETED, data_request, metadata={"rows": dict(counts), "bytes": size})
    emit(
        "gdpr.export.ready",
        f"gdpr_request:{data_request.id}",
        {
            "request_id": str(data_request.id),
            "user_id": str(data_request.user_id),
            "expires_at": data_request.expires_at,
            "download_path": f"/api/v1/gdpr/exports/{data_request.id}/download",
        },
    )
    REQUESTS_TOTAL.labels(RequestKind.EXPORT, "completed").inc()
    log.info("gdpr_export_completed", request_id=str(request_id), bytes=size)
    return Outcome(status=data_request.status)


@transaction.atomic(durable=True)
def _export_record_failure(*, request_id: uuid.UUID, exc: BaseException) -> Outcome:
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.RUNNING:
        return Outcome(status=data_request.status)
    return _record_failure(
        data_request,
        exc,
        attempts=data_request.attempts,
        error=error_text(exc),
        action=AuditAction.GDPR_EXPORT_FAILED,
        metadata={"error": type(exc).__name__},
    )


def _record_failure(
    data_request: DataSubjectRequest,
    exc: BaseException,
    *,
    attempts: int,
    error: str,
    action: AuditAction,
    metadata: Mapping[str, Any],
) -> Outcome:
    """A transient error with attempts left waits for a retry with backoff; otherwise the request is failed
    for good, its reason kept for compliance staff (and it is never 'done')."""
    retry_in = record_failure(data_request, exc, attempts=attempts, error=error)
    if retry_in is not None:
        return _save_waiting(data_request, retry_in)
    data_request.updated_at = timezone.now()
    data_request.save(update_fields=[*outcome_fields(DataSubjectRequest), "updated_at"])
    _request_audit(action, data_request, metadata={**metadata, "attempts": data_request.attempts})
    REQUESTS_TOTAL.labels(data_request.kind, "failed").inc()
    log.error("gdpr_request_failed", request_id=str(data_request.id), kind=data_request.kind, reason=error)
    return Outcome(status=data_request.status)


def _save_waiting(data_request: DataSubjectRequest, retry_in: float) -> Outcome:
    """Save a request set back to waiting; its task runs it again in `retry_in` seconds (gdpr.tasks)."""
    data_request.updated_at = timezone.now()
    data_request.save(update_fields=[*outcome_fields(DataSubjectRequest), "updated_at"])
    REQUESTS_TOTAL.labels(data_request.kind, "retry").inc()
    log.warning(
        "gdpr_request_retrying",
        request_id=str(data_request.id),
        retry_in=round(retry_in, 1),
        error=data_request.last_error,
    )
    return Outcome(status=data_request.status, retry_in=retry_in)


def erasure_process(*, request_id: uuid.UUID) -> Outcome | None:
    """Run the erasure's steps in provider order, skipping finished ones; complete it when all are done.

    Each step runs outside any transaction (providers may call Stripe) and records its outcome in its
    own. The first failing step stops the run: a transient error waits for a retry with backoff, up to
    the retry policy's attempts for that step; then, or on any other error, the request is failed with
    the step's reason. So the request is completed only when every step is.
    """
    data_request = _claim(request_id, RequestKind.ERASURE)
    if data_request is None:
        return None
    try:
        subject, steps = _erasure_prepare(request_id=request_id)
    except Exception as exc:
        log.exception("gdpr_erasure_prepare_failed", request_id=str(request_id))
        return _erasure_record_failure(request_id=request_id, step_id=None, exc=exc)
    for step in steps:
        if step.status == StepStatus.COMPLETED:
            continue
        provider = provider_named(step.provider)
        try:
            if provider is None:
                raise LookupError(f"no personal-data provider named {step.provider!r} is registered")
            provider.erase(subject=subject)
        except Exception as exc:
            log.warning(
                "gdpr_erasure_step_failed", request_id=str(request_id), step=step.provider, error=error_text(exc)
            )
            return _erasure_record_failure(request_id=request_id, step_id=step.id, exc=exc)
        _erasure_step_completed(step_id=step.id)
    return _erasure_record_success(request_id=request_id, subject=subject)


@transaction.atomic(durable=True)
def _erasure_prepare(*, request_id: uuid.UUID) -> tuple[DataSubject, list[ErasureStep]]:
    """One step row per provider (a provider registered since the last run joins); every address known
    for the user is kept on the request, because an early step may blank the one a later step needs."""
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    ErasureStep.objects.bulk_create(
        [ErasureStep(request=data_request, provider=p.name, order=p.order) for p in providers()],
        ignore_conflicts=True,
    )
    subject = _data_subject(data_request)
    known = sorted(subject.emails)
    if known != sorted(data_request.known_emails):
        data_request.known_emails = known
        data_request.save(update_fields=["known_emails"])
    return subject, list(data_request.steps.order_by("order", "provider"))


@transaction.atomic(durable=True)
def _erasure_step_completed(*, step_id: uuid.UUID) -> None:
    # The last error goes (it may quote the user); `attempts` keeps the count of failed runs.
    now = timezone.now()
    ErasureStep.objects.filter(id=step_id).update(
        status=StepStatus.COMPLETED, completed_at=now, updated_at=now, last_error=""
    )


@transaction.atomic(durable=True)
def _erasure_record_failure(*, request_id: uuid.UUID, step_id: uuid.UUID | None, exc: BaseException) -> Outcome:
    # Lock order: the request, then its step.
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.RUNNING:
        return Outcome(status=data_request.status)
    step = ErasureStep.objects.select_for_update().get(id=step_id) if step_id else None
    attempts = data_request.attempts
    if step is not None:  # a step's own failures count against the policy, not the request's runs
        step.attempts += 1
        step.last_error, step.updated_at = error_text(exc), timezone.now()
        attempts = step.attempts
    where = step.provider if step is not None else "preparation"
    # The audit row is hashed for good: it names the step and the error type, never the message
    # (which may quote personal data); the message stays on the request, where erasure can reach it.
    outcome = _record_failure(
        data_request,
        exc,
        attempts=attempts,
        error=f"{where}: {error_text(exc)}",
        action=AuditAction.GDPR_ERASURE_FAILED,
        metadata={"step": where, "error": type(exc).__name__},
    )
    if step is not None:
        if outcome.retry_in is None:
            step.status = StepStatus.FAILED
        step.save(update_fields=["attempts", "last_error", "updated_at", "status"])
    return outcome


@transaction.atomic(durable=True)
def _erasure_record_success(*, request_id: uuid.UUID, subject: DataSubject) -> Outcome:
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.RUNNING:
        return Outcome(status=data_request.status)
    steps = list(data_request.steps.select_for_update().order_by("order", "provider"))
    unfinished = [step.provider for step in steps if step.status != StepStatus.COMPLETED]
    if unfinished:  # a step row appeared meanwhile (a newly registered provider): run again
        retry_in = back_off(data_request, attempt=1, error=f"steps not finished: {', '.join(unfinished)}")
        return _save_waiting(data_request, retry_in)
    now = timezone.now()
    data_request.status, data_request.completed_at, data_request.lease_until = RequestStatus.COMPLETED, now, None
    data_request.user_id, data_request.email, data_request.known_emails = None, "", []
    data_request.last_error, data_request.updated_at = "", now
    message = emit(
        "gdpr.erasure.completed",
        f"gdpr_request:{data_request.id}",
        # The user id is for the services that hold data of their own about the user; the sweeper
        # removes it from our copy once the message is published.
        {
            "request_id": str(data_request.id),
            "user_id": str(subject.user_id),
            "pseudonym": subject.pseudonym,
            "completed_at": now,
        },
    )
    data_request.completion_event_id = message.id
    data_request.save(
        update_fields=[
            *outcome_fields(DataSubjectRequest),
            "completed_at",
            "user_id",
            "email",
            "known_emails",
            "updated_at",
            "completion_event_id",
        ]
    )
    _request_audit(AuditAction.GDPR_ERASURE_COMPLETED, data_request, metadata={"steps": [s.provider for s in steps]})
    REQUESTS_TOTAL.labels(RequestKind.ERASURE, "completed").inc()
    log.info("gdpr_erasure_completed", request_id=str(request_id), steps=len(steps))
    return Outcome(status=data_request.status)


# --- Download ----------------------------------------------------------------------------------------------


def export_download(
    *, user_id: uuid.UUID, request_id: uuid.UUID, request: HttpRequest | None = None
) -> tuple[DataSubjectRequest, IO[bytes]]:
    """The caller's finished export and its open archive; the download is audited.

    404 for anyone else's request, 409 while it is not finished, 410 once its window is over.
    """
    data_request = data_request_get_for_user(user_id=user_id, request_id=request_id, kind=RequestKind.EXPORT)
    expired = data_request.expires_at is not None and data_request.expires_at <= timezone.now()
    if data_request.status in (RequestStatus.EXPIRED, RequestStatus.CANCELED) or expired:
        raise ExportExpired("This export is no longer available; request a new one")
    if data_request.status != RequestStatus.COMPLETED:
        raise ExportNotReady(f"The export is {data_request.status}; try again when it is completed")
    try:
        archive = _export_storage().open(data_request.file_name, "rb")
    except FileNotFoundError:
        log.error("gdpr_export_file_missing", request_id=str(request_id))
        raise ExportExpired("This export is no longer available; request a new one") from None
    try:
        _export_download_record(data_request=data_request, user_id=user_id, request=request)
    except BaseException:
        archive.close()
        raise
    return data_request, archive


@transaction.atomic(durable=True)
def _export_download_record(
    *, data_request: DataSubjectRequest, user_id: uuid.UUID, request: HttpRequest | None
) -> None:
    _request_audit(
        AuditAction.GDPR_EXPORT_DOWNLOADED,
        data_request,
        actor_type=ActorType.USER,
        actor_id=str(user_id),
        request=request,
    )


# --- Compliance staff: retry and cancel --------------------------------------------------------------------


@transaction.atomic(durable=True)
def data_request_retry(*, request_id: uuid.UUID, staff_id: str, request: HttpRequest | None = None) -> bool:
    """Run a failed request again: its failed steps start over with fresh attempts, finished ones are
    skipped. False if it is not failed. Conflict if the user has opened another export meanwhile."""
    data_request = DataSubjectRequest.objects.select_for_update().get(id=request_id)
    if data_request.status != RequestStatus.FAILED:
        return False
    now = timezone.now()
    data_request.status, data_request.next_attempt_at = RequestStatus.PENDING, now + _pickup_grace()
    data_request.updated_at = now
    previous_reason, data_request.last_error = data_request.last_error, ""
    try:
        with transaction.atomic():
            data_request.save(update_fields=["status", "next_attempt_at", "updated_at", "last_error"])
    except IntegrityError:
        raise Conflict("The user has opened another request of this kind; retry that one instead") from None
    data_request.steps.filter(status=StepStatus.FAILED).update(status=StepStatus.PENDING, attempts=0, updated_at=now)
    _request_audit(
        AuditAction.GDPR_REQUEST_RETRIED,
        data_request,
        actor_type=ActorType.STAFF,
        actor_id=staff_id,
        metadata={"previous_status": RequestStatus.FAILED, "had_reason": bool(previous_reason)},
        request=request,
    )
    _enqueue(data_request.id, data_request.kind)
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
    _request_audit(
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
    due = sweep(DataSubjectRequest, grace=_pickup_grace())
    for request_id, kind in DataSubjectRequest.objects.filter(id__in=due).values_list("id", "kind"):
        _enqueue(request_id, kind)
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


def exports_purge() -> int:
    """Delete export files past their download window (→ expired) or withdrawn; returns how many."""
    now = timezone.now()
    stale = (
        DataSubjectRequest.objects.filter(kind=RequestKind.EXPORT)
        .exclude(file_name="")
        .filter(
            Q(status=RequestStatus.COMPLETED, expires_at__lte=now)
            | Q(status__in=[RequestStatus.CANCELED, RequestStatus.FAILED, RequestStatus.EXPIRED])
        )
    )
    purged = 0
    for request_id, file_name in stale.values_list("id", "file_name")[:1000]:
        _export_storage().delete(file_name)  # outside any transaction: it may be an object store
        purged += _export_file_forget(request_id=request_id, file_name=file_name)
    return purged


@transaction.atomic(durable=True)
def _export_file_forget(*, request_id: uuid.UUID, file_name: str) -> int:
    data_request = DataSubjectRequest.objects.select_for_update().filter(id=request_id, file_name=file_name).first()
    if data_request is None:
        return 0
    expiring = data_request.status == RequestStatus.COMPLETED
    data_request.file_name, data_request.updated_at = "", timezone.now()
    if expiring:
        data_request.status = RequestStatus.EXPIRED
    data_request.save(update_fields=["file_name", "updated_at", "status"])
    if expiring:
        _request_audit(AuditAction.GDPR_EXPORT_EXPIRED, data_request)
    return 1


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
