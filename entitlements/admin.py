"""Support's view of entitlements: family groups and members, snapshots, and "why does this user
have (or not have) feature X", answered by the same rules the API uses."""

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from entitlements import selectors, services
from entitlements.models import EntitlementSnapshot, FamilyGroup, FamilyInvitation, FamilyMembership
from payments_project.errors import ApplicationError
from payments_project.roles import Role, RoleRestrictedAdmin, has_role

VIEW_ROLES = (Role.SUPPORT, Role.FINANCE)


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *VIEW_ROLES)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MembershipInline(_ReadOnlyInline):
    model = FamilyMembership
    fields = readonly_fields = ("user_id", "email", "role", "joined_at")


class InvitationInline(_ReadOnlyInline):
    model = FamilyInvitation
    fields = readonly_fields = ("email", "status", "created_at", "expires_at", "accepted_at", "accepted_by_user_id")


@admin.register(FamilyGroup)
class FamilyGroupAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = VIEW_ROLES
    list_display = ("id", "owner_user_id", "status", "created_at", "status_changed_at")
    list_filter = ("status",)
    search_fields = ("=id", "=owner_user_id", "=memberships__user_id")
    ordering = ("-created_at",)
    readonly_fields = ("id", "owner_user_id", "status", "created_at", "status_changed_at")
    inlines = (MembershipInline, InvitationInline)


@admin.register(FamilyMembership)
class FamilyMembershipAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = VIEW_ROLES
    list_display = ("user_id", "email", "role", "group", "joined_at")
    list_filter = ("role",)
    search_fields = ("=user_id", "=group__id", "=group__owner_user_id", "email")
    ordering = ("-joined_at",)
    readonly_fields = ("id", "group", "user_id", "email", "role", "joined_at")
    actions = ("remove_members",)

    @admin.action(description="Remove the selected members from their family")
    def remove_members(self, request: HttpRequest, queryset: QuerySet[FamilyMembership]) -> None:
        if not has_role(request.user, *VIEW_ROLES):
            raise PermissionDenied
        removed = 0
        for membership in queryset:
            try:
                services.family_member_remove(
                    member_user_id=membership.user_id, staff_id=str(request.user.pk), request=request
                )
                removed += 1
            except ApplicationError as error:
                self.message_user(request, f"{membership.user_id}: {error.detail}", messages.WARNING)
        self.message_user(request, f"{removed} member(s) removed.", messages.SUCCESS)


class ExplainForm(forms.Form):
    user_id = forms.UUIDField(label="User id")
    feature = forms.SlugField(max_length=64, label="Feature key")


@admin.register(EntitlementSnapshot)
class EntitlementSnapshotAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    """The last known feature keys per user, and the "why" page (a link on the list page)."""

    view_roles = VIEW_ROLES
    list_display = ("user_id", "features", "updated_at")
    search_fields = ("=user_id",)
    ordering = ("-updated_at",)
    readonly_fields = ("user_id", "features", "updated_at")
    change_list_template = "admin/entitlements/entitlementsnapshot/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        explain = path("explain/", self.admin_site.admin_view(self.explain_view), name="entitlements_explain")
        return [explain, *super().get_urls()]

    def explain_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ExplainForm(request.GET or None)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Why does this user have a feature?",
        }
        context["form"] = form
        if form.is_valid():
            user_id: uuid.UUID = form.cleaned_data["user_id"]
            feature: str = form.cleaned_data["feature"]
            entitlements = selectors.entitlements_from_database(user_ids=[user_id])[user_id]
            context.update(
                user_id=user_id,
                feature=feature,
                entitled=entitlements.has(feature),
                # What checks are answered right now (the cache first): differs only while a bump is pending.
                served=selectors.user_entitlements(user_id=user_id).has(feature),
                features=entitlements.features,
                reasons=selectors.entitlement_explain(user_id=user_id, feature_key=feature),
                family=selectors.family_detail(user_id=user_id),
            )
        return TemplateResponse(request, "admin/entitlements/entitlementsnapshot/explain.html", context)
