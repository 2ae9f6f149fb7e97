"""The routes HotPathMiddleware serves, resolved against this short list instead of the whole urlconf
(the same includes as payments_project.urls, so the same views and view names), but for the single
check and the checkout (the one of billing's routes here): their plain views, which hand all but the common
case to the DRF views payments_project.urls names."""

from django.urls import include, path

from billing.api.views import checkout_session_create
from entitlements.api.views import entitlement_check

urlpatterns = [
    path("api/v1/entitlements/<str:feature_key>", entitlement_check, name="entitlement-check"),
    path("api/v1/checkout/sessions", checkout_session_create, name="billing-checkout"),
    path("api/v1/", include("entitlements.api.urls")),
    path("internal/v1/", include("entitlements.api.internal_urls")),
    path("webhooks/", include("webhooks.api")),
]
