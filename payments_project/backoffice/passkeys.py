"""django-otp-webauthn's endpoints (namespace `otp_webauthn`, which its script calls), with the two that
finish a ceremony audited: a passkey registered (enrolment) and a passkey used (the second factor).
Mounted under /admin/mfa/passkeys/ by payments_project/urls.py."""

from typing import Any

from django.http import HttpResponse
from django.urls import path
from django.views.i18n import JavaScriptCatalog
from django_otp_webauthn import views

from payments_project.backoffice import services
from payments_project.backoffice.mfa import NEW_CODES_SESSION

app_name = "otp_webauthn"


class RegisterComplete(views.CompleteCredentialRegistrationView):
    def post(self, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(*args, **kwargs)
        if response.status_code == 200:
            codes = services.mfa_passkey_enrolled(user=self.request.user, request=self.request)
            if codes:
                self.request.session[NEW_CODES_SESSION] = codes
        return response


class AuthenticateComplete(views.CompleteCredentialAuthenticationView):
    def post(self, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(*args, **kwargs)
        if response.status_code == 200:
            services.mfa_passkey_verified(user=self.request.user, request=self.request)
        return response


urlpatterns = [
    path("registration/begin/", views.BeginCredentialRegistrationView.as_view(), name="credential-registration-begin"),
    path("registration/complete/", RegisterComplete.as_view(), name="credential-registration-complete"),
    path(
        "authentication/begin/",
        views.BeginCredentialAuthenticationView.as_view(),
        name="credential-authentication-begin",
    ),
    path("authentication/complete/", AuthenticateComplete.as_view(), name="credential-authentication-complete"),
    path("jsi18n/", JavaScriptCatalog.as_view(packages=["django_otp_webauthn"]), name="js-i18n-catalog"),
]
