"""Writes of the gdpr app. The audit trail itself is appended by gdpr.audit.record."""

from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from gdpr.audit import ActorType, AuditAction, record
from gdpr.models import AuditEvent

PSEUDONYMISE_FLAG = "jia.audit_pseudonymise"


def _pseudonymise_flag(on: bool) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [PSEUDONYMISE_FLAG, "on" if on else "off"])


@transaction.atomic
def audit_pseudonymise_actor(*, actor_id: str, pseudonym: str) -> int:
    """Erase one actor's personal data from the audit trail; return how many events were changed.

    Every event whose actor is `actor_id` gets `pseudonym` as its actor id, and loses its ip, user agent
    and personal metadata, and its salt. The personal digest stays, so the hash chain still verifies.
    This is the only update the append-only trigger lets through: it is opened by a transaction-local
    flag, closed again right after, and even then only the personal columns may change.
    """
    if not actor_id or not pseudonym or pseudonym == actor_id:
        raise ValueError("audit_pseudonymise_actor needs an actor id and a different, non-empty pseudonym")
    _pseudonymise_flag(True)
    try:
        changed = AuditEvent.objects.filter(actor_id=actor_id)._pseudonymise(
            actor_id=pseudonym, ip=None, user_agent="", personal={}, personal_salt="", pseudonymised_at=timezone.now()
        )
    finally:
        _pseudonymise_flag(False)
    record(
        action=AuditAction.AUDIT_PSEUDONYMISED,
        actor_type=ActorType.SYSTEM,
        target_type="audit_actor",
        target_id=pseudonym,
        metadata={"events": changed},
    )
    return changed


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
