"""What the data-subject request services share: metrics, audit rows, enqueueing, the claim, the failure policy."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import Counter

from gdpr.audit import ActorType, AuditAction, record
from gdpr.models import DataSubjectRequest, RequestKind
from gdpr.registry import DataSubject, providers
from tasks.base import enqueue_on_commit
from tasks.jobs import claim, outcome_fields, record_failure

log = structlog.get_logger(__name__)


REQUESTS_TOTAL = Counter("payments_gdpr_requests_total", "GDPR requests by kind and outcome", ["kind", "outcome"])


def request_audit(
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


def request_enqueue(request_id: uuid.UUID, kind: str) -> None:
    from gdpr.tasks import erasure_process_task, export_process_task  # gdpr.tasks imports this package

    task = export_process_task if kind == RequestKind.EXPORT else erasure_process_task
    enqueue_on_commit(task, str(request_id))


def pickup_grace() -> timedelta:
    """How long a request waits for the worker its commit nudged before the sweeper sends another."""
    return timedelta(seconds=settings.GDPR_PICKUP_GRACE_SECONDS)


@dataclass(frozen=True)
class Outcome:
    """How one run of a request ended, for its task (gdpr.tasks schedules the retry)."""

    status: str
    retry_in: float | None = None  # seconds until the next attempt, when one is due


def request_claim(request_id: uuid.UUID, kind: RequestKind) -> DataSubjectRequest | None:
    """Take the request for this worker: pending, or running under a lease that ran out (a dead worker).
    Its steps run outside any transaction, so the lease, not a row lock, keeps a second worker out."""
    now = timezone.now()
    claimed = claim(
        DataSubjectRequest.objects.filter(id=request_id, kind=kind),
        started_at=Coalesce("started_at", Value(now)),
        updated_at=now,
    )
    return DataSubjectRequest.objects.get(id=request_id) if claimed else None


def data_subject_of(data_request: DataSubjectRequest) -> DataSubject:
    """The person a request is about, with every address any provider knows for them."""
    if data_request.user_id is None:
        raise RuntimeError(f"request {data_request.id} has no user id any more")
    # The request's address (a verified claim) and those on the user's own rows; DataSubject keeps only
    # real addresses, normalised for exact matching.
    emails = {data_request.email, *data_request.known_emails}
    for provider in providers():
        emails |= set(provider.emails(user_id=data_request.user_id))
    return DataSubject(user_id=data_request.user_id, pseudonym=data_request.subject, emails=frozenset(emails))


def request_record_failure(
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
        return request_save_waiting(data_request, retry_in)
    data_request.updated_at = timezone.now()
    data_request.save(update_fields=[*outcome_fields(DataSubjectRequest), "updated_at"])
    request_audit(action, data_request, metadata={**metadata, "attempts": data_request.attempts})
    REQUESTS_TOTAL.labels(data_request.kind, "failed").inc()
    log.error("gdpr_request_failed", request_id=str(data_request.id), kind=data_request.kind, reason=error)
    return Outcome(status=data_request.status)


def request_save_waiting(data_request: DataSubjectRequest, retry_in: float) -> Outcome:
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
