"""Into the audit trail, from apps below gdpr: admin sessions (login, logout and failed login: Django's auth
signals) and outbox replays (tasks.outbox_ops)."""

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from gdpr import audit
from gdpr.audit import AuditAction
from gdpr.services import audit_staff_session
from tasks.models import OutboxMessage
from tasks.outbox_ops import outbox_message_replayed

_USERNAME_MAX = 150


@receiver(user_logged_in, dispatch_uid="gdpr.audit_login")
def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit_staff_session(action=AuditAction.ADMIN_LOGIN, user=user, request=request)


@receiver(user_logged_out, dispatch_uid="gdpr.audit_logout")
def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:  # logging out without a session is no event
        audit_staff_session(action=AuditAction.ADMIN_LOGOUT, user=user, request=request)


@receiver(user_login_failed, dispatch_uid="gdpr.audit_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))[:_USERNAME_MAX]
    audit_staff_session(action=AuditAction.ADMIN_LOGIN_FAILED, username=username, request=request)


@receiver(outbox_message_replayed, dispatch_uid="gdpr.audit_outbox_replay")
def _outbox_replayed(
    sender: Any, message: OutboxMessage, staff_id: str, request: HttpRequest | None, **previous: Any
) -> None:
    # The subject ("user:<id>", ...) stays out: the chain holds no personal data.
    audit.record(
        action=AuditAction.OUTBOX_REPLAYED,
        actor_type=audit.ActorType.STAFF,
        actor_id=staff_id,
        target_type="outbox_message",
        target_id=str(message.id),
        metadata={"type": message.type, **{key: previous[key] for key in ("previous_status", "attempts")}},
        request=request,
    )
