"""The admin site: staff get in only with a second factor, and finance lands on the dashboard.

A staff member who passed the password but no second factor is sent to enrol one (first sign-in) or to
verify one; every admin page refuses such a session (`has_permission`), in every environment. Sessions end
after SESSION_COOKIE_AGE idle (SESSION_SAVE_EVERY_REQUEST moves the expiry on) and ADMIN_SESSION_MAX_SECONDS
after the password was accepted.
"""

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp import user_has_device

from payments_project.backoffice import dashboard, mfa
from payments_project.backoffice.lockout import SIGNED_IN_AT
from payments_project.roles import Role, has_role

View = Callable[..., HttpResponse]
V = TypeVar("V", bound=Callable[..., Any])


def needs_second_factor(request: HttpRequest) -> bool:
    """A signed-in, active staff member whose session has no verified second factor yet."""
    user = request.user
    return bool(user.is_authenticated and user.is_active and user.is_staff and not mfa.is_verified(user))


def session_expired(request: HttpRequest) -> bool:
    started = request.session.get(SIGNED_IN_AT)
    return started is not None and time.time() - started > settings.ADMIN_SESSION_MAX_SECONDS


def second_factor_redirect(request: HttpRequest, *, next_url: str = "") -> HttpResponseRedirect:
    """To the verify page, or to enrolment for someone who has no second factor yet."""
    name = "admin:mfa_verify" if user_has_device(request.user) else "admin:mfa_enrol"
    query = f"?{urlencode({'next': next_url})}" if next_url else ""
    return HttpResponseRedirect(reverse(name) + query)


class AdminSite(admin.AdminSite):
    site_header = "Jia Payments"
    site_title = "Jia Payments admin"
    index_title = "Finance and operations"
    index_template = "backoffice/index.html"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and mfa.is_verified(request.user) and not session_expired(request)

    def admin_view(self, view: V, cacheable: bool = False) -> V:
        inner = super().admin_view(view, cacheable)

        @functools.wraps(view)
        def gate(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.user.is_authenticated and session_expired(request):
                logout(request)
                return redirect_to_login(request.get_full_path(), reverse("admin:login", current_app=self.name))
            if needs_second_factor(request):
                if request.path == reverse("admin:logout", current_app=self.name):
                    return csrf_protect(view)(request, *args, **kwargs)  # one may always leave
                return second_factor_redirect(request, next_url=request.get_full_path())
            return inner(request, *args, **kwargs)

        return cast(V, gate)

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "GET" and needs_second_factor(request):
            return second_factor_redirect(request, next_url=request.GET.get("next", ""))
        return super().login(request, extra_context)

    def _signed_in(self, view: Callable[..., HttpResponse]) -> View:
        """The second-factor pages: for a staff member past the password, verified or not."""

        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not (user.is_authenticated and user.is_active and user.is_staff) or session_expired(request):
                return redirect_to_login(request.get_full_path(), reverse("admin:login", current_app=self.name))
            return view(request, *args, site=self, **kwargs)

        return never_cache(csrf_protect(guarded))

    def get_urls(self) -> list[URLResolver | URLPattern]:
        return [
            path("mfa/", self._signed_in(mfa.verify_view), name="mfa_verify"),
            path("mfa/enrol/", self._signed_in(mfa.enrol_view), name="mfa_enrol"),
            path("mfa/recovery-codes/", self._signed_in(mfa.recovery_codes_view), name="mfa_recovery_codes"),
            path("mfa/devices/", self.admin_view(functools.partial(mfa.devices_view, site=self)), name="mfa_devices"),
            *super().get_urls(),
        ]

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """Finance (and superusers) land on the dashboard, above the usual list of apps."""
        extra = dict(extra_context or {})
        if has_role(request.user, Role.FINANCE):
            extra["dashboard"] = dashboard.finance_dashboard()
        return super().index(request, extra)
