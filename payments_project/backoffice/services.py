"""Staff sign-in's writes: second factors (TOTP, recovery codes, passkeys) and unlocking lockouts.

Each is one transaction with its audit event (gdpr.audit.record). A session counts as signed in only
once a second factor is verified (`django_otp.login` marks it), and the event `admin.mfa_verified` says so.
"""

import secrets
import time
from collections.abc import Iterable
from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django_otp import devices_for_user
from django_otp import login as otp_login
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from gdpr.audit import ActorType, AuditAction, record

TOTP_TOLERANCE_STEPS = 1  # the code of the previous or next 30 s too: clocks drift, people type slowly
TOTP_KEY_BYTES = 20
RECOVERY_DEVICE_NAME = "Recovery codes"


class InvalidCode(Exception):
    """The code typed is not the device's current code (or not an unused recovery code)."""


def mfa_new_totp_key() -> str:
    """A fresh TOTP secret (hex, as django-otp stores it), shown at enrolment before any device exists."""
    return secrets.token_hex(TOTP_KEY_BYTES)


def _audit(action: AuditAction, *, user: Any, request: HttpRequest | None, metadata: dict[str, Any]) -> None:
    record(
        action=action,
        actor_type=ActorType.STAFF,
        actor_id=str(user.pk),
        target_type="admin_session",
        metadata=metadata,
        request=request,
    )


def _recovery_codes_replace(user: Any) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE_NAME, confirmed=True)
    codes = [StaticToken.random_token() for _ in range(settings.MFA_RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


@transaction.atomic(durable=True)
def mfa_totp_enrol(*, user: Any, key: str, code: str, request: HttpRequest) -> list[str]:
    """Enrol an authenticator app whose current code proves it holds `key`; the session is then signed in
    with it. Returns new single-use recovery codes (any older ones stop working), to be shown once."""
    totp = TOTP(bytes.fromhex(key))
    totp.time = time.time()
    code = code.strip().replace(" ", "")
    if not (code.isascii() and code.isdigit()) or not totp.verify(int(code), tolerance=TOTP_TOLERANCE_STEPS):
        raise InvalidCode
    device = TOTPDevice.objects.create(
        user=user, name="Authenticator app", key=key, confirmed=True, tolerance=TOTP_TOLERANCE_STEPS, last_t=totp.t()
    )
    codes = _recovery_codes_replace(user)
    _audit(AuditAction.ADMIN_MFA_ENROLLED, user=user, request=request, metadata={"method": "totp"})
    otp_login(request, device)
    return codes


@transaction.atomic(durable=True)
def mfa_passkey_enrolled(*, user: Any, request: HttpRequest) -> list[str]:
    """Audit a passkey just registered (django-otp-webauthn saved it). A first factor-two device also gets
    recovery codes, returned to be shown once; otherwise the list is empty."""
    codes = [] if StaticDevice.objects.filter(user=user).exists() else _recovery_codes_replace(user)
    _audit(AuditAction.ADMIN_MFA_ENROLLED, user=user, request=request, metadata={"method": "passkey"})
    return codes


@transaction.atomic(durable=True)
def mfa_passkey_verified(*, user: Any, request: HttpRequest) -> None:
    """Audit a sign-in completed with a passkey (django-otp-webauthn verified it and marked the session)."""
    _audit(AuditAction.ADMIN_MFA_VERIFIED, user=user, request=request, metadata={"method": "passkey"})


@transaction.atomic(durable=True)
def mfa_recovery_codes_issue(*, user: Any, request: HttpRequest) -> list[str]:
    """New recovery codes for a signed-in staff member; the old ones stop working."""
    codes = _recovery_codes_replace(user)
    _audit(AuditAction.ADMIN_RECOVERY_CODES_ISSUED, user=user, request=request, metadata={"codes": len(codes)})
    return codes


@transaction.atomic(durable=True)
def mfa_verify(*, user: Any, code: str, request: HttpRequest) -> str | None:
    """Sign the session in with a code of the user's authenticator app or one of their recovery codes (used
    up). Returns the method ("totp" or "recovery_code"), or None for a wrong code: that is audited and
    committed (not raised, which would roll it back) with django-otp's throttling of each device, so
    guessing gets slower and slower."""
    code = code.strip().replace(" ", "").lower()
    for device in devices_for_user(user, for_verify=True):
        if isinstance(device, TOTPDevice | StaticDevice) and code and device.verify_token(code):
            method = "totp" if isinstance(device, TOTPDevice) else "recovery_code"
            metadata: dict[str, Any] = {"method": method}
            if isinstance(device, StaticDevice):
                metadata["recovery_codes_left"] = device.token_set.count()
            _audit(AuditAction.ADMIN_MFA_VERIFIED, user=user, request=request, metadata=metadata)
            otp_login(request, device)
            return method
    _audit(AuditAction.ADMIN_MFA_FAILED, user=user, request=request, metadata={})
    return None


@transaction.atomic(durable=True)
def lockout_unlock(
    *, staff: Any, request: HttpRequest, usernames: Iterable[str] = (), ip_addresses: Iterable[str] = ()
) -> int:
    """A superuser lifts lockouts: every failed attempt of these usernames or from these addresses goes.
    Returns how many attempt rows were deleted; each unlocked username or address is audited."""
    usernames, ip_addresses = sorted(set(usernames) - {""}), sorted(set(ip_addresses) - {""})
    deleted, _ = AccessAttempt.objects.filter(Q(username__in=usernames) | Q(ip_address__in=ip_addresses)).delete()
    for username in usernames:
        _audit_unlock(staff, request, target_type="admin_account", metadata={"username": username})
    for ip in ip_addresses:
        _audit_unlock(staff, request, target_type="client_address", metadata={"ip": ip})
    return deleted


def _audit_unlock(staff: Any, request: HttpRequest, *, target_type: str, metadata: dict[str, str]) -> None:
    record(
        action=AuditAction.ADMIN_UNLOCKED,
        actor_type=ActorType.STAFF,
        actor_id=str(staff.pk),
        target_type=target_type,
        metadata=metadata,
        request=request,
    )
