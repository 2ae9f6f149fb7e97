"""Service-to-service routes, under /internal/v1/ (payments_project.urls.internal_v1)."""

from django.urls import path

from entitlements.api import views

urlpatterns = [
    path(
        "users/<uuid:user_id>/entitlements",
        views.InternalUserEntitlementsApi.as_view(),
        name="internal-user-entitlements",
    ),
    path("entitlements/check", views.InternalEntitlementCheckApi.as_view(), name="internal-entitlements-check"),
]
