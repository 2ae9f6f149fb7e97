"""gdpr's own personal data: the audit trail, the user's requests, and the outbox's copies of domain
events (the outbox belongs to `tasks`, below every app, so gdpr answers for it). Registered last
(order 90), so it also catches what the earlier steps recorded.

Erasure:
- domain events that name the user (their id, an address) are redacted once published — the other
  services need the original; an erasure waits (a retry) while one is still unpublished;
- the user's other requests lose their user id and addresses, and exports their files;
- the audit trail, which names the user only by their pseudonym, loses its personal side data about them
  (gdpr.services.audit_personal_erase); the hash chain is not touched.
"""

from typing import Any

from django.core.files.storage import storages
from django.db import transaction
from django.db.models import Q, QuerySet

from gdpr.audit import PERSONAL_METADATA_KEYS, PERSONAL_REFERENCE_KEYS, PERSONAL_TARGET_TYPES, ActorType
from gdpr.models import (
    OPEN_REQUEST,
    AuditEvent,
    AuditEventPersonal,
    DataSubjectRequest,
    ErasureStep,
    RequestKind,
    RequestStatus,
)
from gdpr.registry import (
    DataSubject,
    JSONStringsAny,
    PersonalDataProvider,
    ProviderNotReady,
    Tables,
    redact_json,
    redact_text,
    replacements_for,
    rows,
)
from gdpr.services import EXPORT_STORAGE, audit_personal_erase
from tasks.models import OutboxMessage

# What an export shows of an event the user did not do themselves: not the actor's personal data.
_EVENT_COLUMNS = ("id", "seq", "occurred_at", "actor_type", "action", "target_type", "target_id", "metadata")
# ... and what it adds of the user's own events: their side data, as the export names it.
_OWN_EVENT_PERSONAL = {"personal__ip": "ip", "personal__user_agent": "user_agent", "personal__metadata": "personal"}


def _events_by(subject: DataSubject) -> Q:
    return Q(actor_type=ActorType.USER, actor_id=subject.pseudonym)


def _events_about(subject: DataSubject) -> Q:
    about = Q(target_type__in=PERSONAL_TARGET_TYPES, target_id=subject.pseudonym)
    for key in PERSONAL_REFERENCE_KEYS:
        about |= Q(**{f"metadata__{key}": subject.pseudonym})
    for key in PERSONAL_METADATA_KEYS:
        for email in subject.emails:
            about |= Q(**{f"personal__metadata__{key}__iexact": email})
    return about


def _outbox_naming(subject: DataSubject) -> QuerySet[OutboxMessage]:
    """Events whose subject is the user (`user:<id>`) or some string of whose data is exactly one of
    their identifiers (never a substring: `jimbob@x.com` is not `bob@x.com`)."""
    return OutboxMessage.objects.filter(
        Q(subject=f"user:{subject.user_id}") | Q(JSONStringsAny("data", subject.identifiers))
    )


def gdpr_export(*, subject: DataSubject) -> Tables:
    own = AuditEvent.objects.filter(_events_by(subject))
    about = AuditEvent.objects.filter(_events_about(subject)).exclude(_events_by(subject))
    events: list[dict[str, Any]] = [
        *(
            {_OWN_EVENT_PERSONAL.get(column, column): value for column, value in event.items()}
            for event in own.order_by("seq").values(*_EVENT_COLUMNS, "actor_id", *_OWN_EVENT_PERSONAL)
        ),
        *about.order_by("seq").values(*_EVENT_COLUMNS),
    ]
    events.sort(key=lambda event: (event["seq"] is None, event["seq"] or 0))  # unsealed ones last
    requests = DataSubjectRequest.objects.filter(subject=subject.pseudonym)
    return {
        "audit_events": events,
        "requests": rows(
            requests, exclude=("lease_until", "file_name", "completion_event_id", "completion_event_redacted_at")
        ),
    }


def gdpr_erase(*, subject: DataSubject) -> None:
    _outbox_redact(subject)
    _requests_forget(subject)
    audit_personal_erase(subject=subject)


def _outbox_redact(subject: DataSubject) -> None:
    naming = _outbox_naming(subject)
    waiting = naming.filter(published_at__isnull=True).count()
    if waiting:
        raise ProviderNotReady(f"{waiting} domain event(s) naming the user are not published yet")
    replacements = replacements_for(subject)
    with transaction.atomic():
        for message in naming.select_for_update(of=("self",)).order_by("id"):
            message.data = redact_json(message.data, replacements)
            message.subject = redact_text(message.subject, replacements)
            message.save(update_fields=["data", "subject"])


def _requests_forget(subject: DataSubject) -> None:
    """The user's other requests: exports lose their file, every one its user id and addresses. The
    erasure that is running (open) keeps them until it completes."""
    mine = DataSubjectRequest.objects.filter(subject=subject.pseudonym)
    for file_name in mine.exclude(file_name="").values_list("file_name", flat=True):
        storages[EXPORT_STORAGE].delete(file_name)  # outside the transaction: it may be an object store
    with transaction.atomic():
        # An export still being built would hold data that is being erased: it is withdrawn.
        mine.filter(kind=RequestKind.EXPORT, status__in=[RequestStatus.PENDING, RequestStatus.RUNNING]).update(
            status=RequestStatus.CANCELED, lease_until=None
        )
        mine.filter(kind=RequestKind.EXPORT, status=RequestStatus.COMPLETED).update(status=RequestStatus.EXPIRED)
        mine.exclude(OPEN_REQUEST & Q(kind=RequestKind.ERASURE)).update(
            user_id=None, email="", known_emails=[], file_name=""
        )


PROVIDER = PersonalDataProvider(
    name="gdpr",
    order=90,
    models=(AuditEvent, AuditEventPersonal, DataSubjectRequest, ErasureStep, OutboxMessage),
    export=gdpr_export,
    erase=gdpr_erase,
)
