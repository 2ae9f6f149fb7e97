"""Audit-trail writes outside the data-subject requests: staff sessions, and erasing a subject's personal side data."""

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest

from gdpr.audit import ActorType, AuditAction, record
from gdpr.models import AuditEventPersonal
from gdpr.registry import DataSubject, JSONStringsAny


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


@transaction.atomic(durable=True)
def audit_personal_erase(*, subject: DataSubject) -> int:
    """Delete a data subject's personal data from the audit trail; return how many events lost theirs.

    The side rows (AuditEventPersonal) of every event the subject did go, ip and user agent included,
    and so do those of other people's events whose personal metadata names the subject (an invitation
    sent to their address). The chain holds only the subject's pseudonym and is not touched: it still
    verifies, and their events stay findable by the pseudonym.
    """
    naming = Q(event__actor_type=ActorType.USER, event__actor_id=subject.pseudonym) | Q(
        JSONStringsAny("metadata", subject.identifiers)
    )
    erased, _ = AuditEventPersonal.objects.filter(naming).delete()
    record(
        action=AuditAction.AUDIT_PERSONAL_ERASED,
        actor_type=ActorType.SYSTEM,
        target_type="audit_personal",
        target_id=subject.pseudonym,
        metadata={"events": erased},
    )
    return erased
