from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from payments_project import health
from payments_project.ratelimit import check_rate_limit
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


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """Django admin's login, with sign-in attempts (POSTs) rate limited per client IP."""
    if request.method == "POST":
        check_rate_limit(request, "admin_login")
    return admin.site.login(request, extra_context)


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", include("django_prometheus.urls")),  # /metrics
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include(api_v1)),
    path("internal/v1/", include(internal_v1)),
    path("webhooks/", include("webhooks.api")),
]
