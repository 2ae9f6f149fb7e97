"""Erasure: run every provider's step, each in its own transaction, and announce the completion."""

import uuid

import structlog
from django.db import transaction
from django.utils import timezone

from gdpr.audit import AuditAction
from gdpr.models import DataSubjectRequest, ErasureStep, RequestKind, RequestStatus, StepStatus
from gdpr.registry import DataSubject, provider_named, providers
from gdpr.services._shared import (
    REQUESTS_TOTAL,
    Outcome,
    data_subject_of,
    request_audit,
    request_claim,
    request_record_failure,
    request_save_waiting,
)
from tasks.jobs import back_off, error_text, outcome_fields
from tasks.outbox import emit

log = structlog.get_logger(__name__)


def erasure_process(*, request_id: uuid.UUID) -> Outcome | None:
    """Run the erasure's steps in provider order, skipping finished ones; complete it when all are done.

    Each step runs outside any transaction (providers may call Stripe) and records its outcome in its
    own. The first failing step stops the run: a transient error waits for a retry with backoff, up to
    the retry policy's attempts for that step; then, or on any other error, the request is failed with
    the step's reason. So the request is completed only when every step is.
    """
    data_request = request_claim(request_id, RequestKind.ERASURE)
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
    subject = data_subject_of(data_request)
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
    outcome = request_record_failure(
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
        return request_save_waiting(data_request, retry_in)
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
    request_audit(AuditAction.GDPR_ERASURE_COMPLETED, data_request, metadata={"steps": [s.provider for s in steps]})
    REQUESTS_TOTAL.labels(RequestKind.ERASURE, "completed").inc()
    log.info("gdpr_erasure_completed", request_id=str(request_id), steps=len(steps))
    return Outcome(status=data_request.status)
