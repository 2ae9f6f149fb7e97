"""Client routes, under /api/v1/ (payments_project.urls.api_v1)."""

from django.urls import path

from entitlements.api import views

urlpatterns = [
    path("entitlements", views.EntitlementListApi.as_view(), name="entitlements"),
    path("entitlements/<str:feature_key>", views.EntitlementDetailApi.as_view(), name="entitlement-check"),
    path("family", views.FamilyApi.as_view(), name="family"),
    path("family/invitations", views.FamilyInvitationCreateApi.as_view(), name="family-invitations"),
    path("family/invitations/accept", views.FamilyInvitationAcceptApi.as_view(), name="family-invitation-accept"),
    path(
        "family/invitations/<str:token>/accept",  # deprecated: the token belongs in the body
        views.FamilyInvitationAcceptByPathApi.as_view(),
        name="family-invitation-accept-by-path",
    ),
    path("family/members/<uuid:user_id>", views.FamilyMemberApi.as_view(), name="family-member"),
]
