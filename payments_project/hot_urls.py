"""The routes HotPathMiddleware serves, resolved against this short list instead of the whole urlconf
(the same includes as payments_project.urls, so the same views and view names), but for the single
check: its plain view (which hands all but the common case to the DRF view payments_project.urls names), and
the checkout alone of billing's routes."""

from django.urls import include, path

from billing.api.views import CheckoutSessionCreateApi
from entitlements.api.views import entitlement_check

urlpatterns = [
    path("api/v1/entitlements/<str:feature_key>", entitlement_check, name="entitlement-check"),
    path("api/v1/checkout/sessions", CheckoutSessionCreateApi.as_view(), name="billing-checkout"),
    path("api/v1/", include("entitlements.api.urls")),
    path("internal/v1/", include("entitlements.api.internal_urls")),
    path("webhooks/", include("webhooks.api")),
]
