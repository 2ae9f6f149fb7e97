from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from payments_project import health
from payments_project.service_auth import WhoAmIView

api_v1: list = [  # the apps' client API routes (JWT)
    path("", include("billing.api.urls")),
    path("", include("entitlements.api.urls")),
    path("", include("gdpr.api.urls")),
]
internal_v1: list = [  # the apps' service-to-service routes (SPIFFE identity)
    path("whoami", WhoAmIView.as_view(), name="internal-whoami"),
    path("", include("entitlements.api.internal_urls")),
]


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", include("django_prometheus.urls")),  # /metrics
    # Passkeys (django-otp-webauthn's endpoints, audited); sign-in lockouts are django-axes' (backoffice).
    path("admin/mfa/passkeys/", include("payments_project.backoffice.passkeys")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include(api_v1)),
    path("internal/v1/", include(internal_v1)),
    path("webhooks/", include("webhooks.api")),
]
