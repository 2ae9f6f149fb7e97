"""Sign-in lockouts (django-axes) and the staff session clock.

AXES_LOCKOUT_PARAMETERS counts failures per username and per client IP. django-axes applies one limit
to both; LockoutHandler gives an IP its own, higher limit (AXES_IP_FAILURE_LIMIT), so five wrong
passwords lock that username while a colleague behind the same office address still signs in, and a
guesser trying many usernames from one address is stopped too.
"""

import time
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.db.models import Sum
from django.dispatch import receiver
from django.http import HttpRequest

from gdpr.audit import ActorType, AuditAction, record

SIGNED_IN_AT = "signed_in_at"  # session key: when the password was accepted (the absolute session limit)


class LockoutHandler(AxesDatabaseHandler):
    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        """Failures on the scale of AXES_FAILURE_LIMIT: the username's own, or the IP's scaled down so that
        the IP reaches the limit at AXES_IP_FAILURE_LIMIT failures."""
        by_username, by_ip = (
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        return max(by_username, by_ip * settings.AXES_FAILURE_LIMIT // settings.AXES_IP_FAILURE_LIMIT)


@receiver(user_locked_out, dispatch_uid="backoffice.audit_lockout")
def _locked_out(sender: Any, request: HttpRequest, username: str | None, ip_address: str | None, **_: Any) -> None:
    """Every sign-in refused or locking because of too many failures (the username goes beside the chain)."""
    with transaction.atomic():
        record(
            action=AuditAction.ADMIN_LOCKED_OUT,
            actor_type=ActorType.SYSTEM,
            target_type="admin_account",
            metadata={
                "username": str(username or "")[:150],
                "failures": getattr(request, "axes_failures_since_start", 0),
            },
            request=request,
        )


@receiver(user_logged_in, dispatch_uid="backoffice.session_clock")
def _start_session_clock(sender: Any, request: HttpRequest | None, **_: Any) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SIGNED_IN_AT] = int(time.time())
