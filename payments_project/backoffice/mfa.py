"""The second-factor pages: enrol (first sign-in), verify (every sign-in), recovery codes, devices.

Passkeys use django-otp-webauthn's own endpoints and script (backoffice/passkeys.py audits them); these
pages only place its button.
"""

from base64 import b32encode
from io import BytesIO
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString, mark_safe
from django_otp import devices_for_user, user_has_device
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp.qr import write_qrcode_image
from django_otp_webauthn.models import WebAuthnCredential

from payments_project.backoffice import services

TOTP_KEY_SESSION = "mfa_totp_key"  # the secret being enrolled, until its first code confirms it
NEW_CODES_SESSION = "mfa_new_recovery_codes"  # codes made by a passkey enrolment, shown once


def is_verified(user: Any) -> bool:
    """Whether django-otp's middleware found a verified second factor in this user's session."""
    check = getattr(user, "is_verified", None)
    return bool(check and check())


def _next(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return wanted if safe and wanted else reverse("admin:index")


def _page(request: HttpRequest, site: admin.AdminSite, template: str, title: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {**site.each_context(request), "title": title, "next": _next(request), **context},
    )


def _qr_svg(data: str) -> SafeString:
    out = BytesIO()
    write_qrcode_image(data, out)
    svg = out.getvalue().decode()
    return mark_safe(svg[svg.index("<svg") :])  # noqa: S308 - made here from our own otpauth URL


def verify_view(request: HttpRequest, *, site: admin.AdminSite) -> HttpResponse:
    """A code from the authenticator app or a recovery code, or a passkey; then where the user was going."""
    if is_verified(request.user):
        return HttpResponseRedirect(_next(request))
    if not user_has_device(request.user):
        return HttpResponseRedirect(reverse("admin:mfa_enrol") + f"?next={_next(request)}")
    error = ""
    if request.method == "POST":
        if services.mfa_verify(user=request.user, code=request.POST.get("otp_token", ""), request=request):
            return HttpResponseRedirect(_next(request))
        error = "That code did not work. Wait for a new code and try again, or use a recovery code."
    has_passkey = WebAuthnCredential.objects.filter(user=request.user, confirmed=True).exists()
    return _page(
        request, site, "backoffice/mfa_verify.html", "Second step: confirm it is you", error=error, passkey=has_passkey
    )


def enrol_view(request: HttpRequest, *, site: admin.AdminSite) -> HttpResponse:
    """First sign-in: set up an authenticator app (or a passkey) before anything else."""
    if user_has_device(request.user):
        return HttpResponseRedirect(reverse("admin:mfa_verify") + f"?next={_next(request)}")
    key = request.session.get(TOTP_KEY_SESSION) or services.mfa_new_totp_key()
    request.session[TOTP_KEY_SESSION] = key
    error = ""
    if request.method == "POST":
        try:
            codes = services.mfa_totp_enrol(
                user=request.user, key=key, code=request.POST.get("otp_token", ""), request=request
            )
        except services.InvalidCode:
            error = "That code did not match. Check the time on your phone and type the newest code."
        else:
            del request.session[TOTP_KEY_SESSION]
            return _page(request, site, "backoffice/mfa_recovery_codes.html", "Your recovery codes", codes=codes)
    device = TOTPDevice(user=request.user, key=key)
    secret = b32encode(bytes.fromhex(key)).decode()
    return _page(
        request,
        site,
        "backoffice/mfa_enrol.html",
        "Set up your second factor",
        qr=_qr_svg(device.config_url),
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        error=error,
    )


def recovery_codes_view(request: HttpRequest, *, site: admin.AdminSite) -> HttpResponse:
    """Codes made by a passkey enrolment (shown once), or, posted by a signed-in user, new ones."""
    if request.method == "POST" and is_verified(request.user):
        codes = services.mfa_recovery_codes_issue(user=request.user, request=request)
    else:
        codes = request.session.pop(NEW_CODES_SESSION, None) or []
    if not codes:
        return HttpResponseRedirect(_next(request))
    return _page(request, site, "backoffice/mfa_recovery_codes.html", "Your recovery codes", codes=codes)


def devices_view(request: HttpRequest, *, site: admin.AdminSite) -> HttpResponse:
    """A signed-in staff member's second factors: add a passkey, make new recovery codes."""
    devices = list(devices_for_user(request.user))
    recovery = next((d for d in devices if isinstance(d, StaticDevice)), None)
    return _page(
        request,
        site,
        "backoffice/mfa_devices.html",
        "Your sign-in methods",
        devices=[d for d in devices if not isinstance(d, StaticDevice)],
        recovery_codes_left=recovery.token_set.count() if recovery else 0,
    )
