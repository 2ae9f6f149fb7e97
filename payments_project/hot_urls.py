"""The routes HotPathMiddleware serves, resolved against this short list instead of the whole urlconf
(the same includes as payments_project.urls, so the same views and view names)."""

from django.urls import include, path

urlpatterns = [
    path("api/v1/", include("entitlements.api.urls")),
    path("internal/v1/", include("entitlements.api.internal_urls")),
    path("webhooks/", include("webhooks.api")),
]
