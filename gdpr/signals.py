"""Admin sessions into the audit trail: login, logout and failed login (Django's auth signals)."""

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from gdpr.audit import AuditAction
from gdpr.services import audit_staff_session

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
