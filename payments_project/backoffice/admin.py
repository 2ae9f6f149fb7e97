"""Sign-in attempts in admin: failed ones (django-axes' lockouts) and successful ones. Compliance and
superusers see them; only a superuser unlocks, and every unlock is audited."""

from typing import Any

from axes.models import AccessAttempt, AccessLog
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from payments_project.backoffice.services import lockout_unlock
from payments_project.roles import Role, RoleRestrictedAdmin


class _ReadOnly(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = (Role.COMPLIANCE,)
    date_hierarchy = "attempt_time"
    ordering = ("-attempt_time",)
    search_fields = ("username", "ip_address")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.concrete_fields]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # unlocking is an audited action, not a delete


@admin.register(AccessAttempt)
class AccessAttemptAdmin(_ReadOnly):
    list_display = ("attempt_time", "username", "ip_address", "failures_since_start", "username_locked", "path_info")
    list_filter = ("attempt_time",)
    actions = ("unlock_usernames", "unlock_addresses")
    exclude = ("post_data",)  # what was typed: never shown, even with the password masked

    @admin.display(description="username locked", boolean=True)
    def username_locked(self, attempt: AccessAttempt) -> bool:
        return attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [name for name in super().get_readonly_fields(request, obj) if name != "post_data"]

    def has_unlock_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff and user.is_superuser)

    @admin.action(description="Unlock the selected usernames", permissions=["unlock"])
    def unlock_usernames(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        usernames = set(queryset.values_list("username", flat=True))
        deleted = lockout_unlock(staff=request.user, request=request, usernames=[u for u in usernames if u])
        self.message_user(request, f"Unlocked {len(usernames)} username(s) ({deleted} attempt rows).", messages.SUCCESS)

    @admin.action(description="Unlock the selected client addresses", permissions=["unlock"])
    def unlock_addresses(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        addresses = set(queryset.values_list("ip_address", flat=True))
        deleted = lockout_unlock(staff=request.user, request=request, ip_addresses=[a for a in addresses if a])
        self.message_user(request, f"Unlocked {len(addresses)} address(es) ({deleted} attempt rows).", messages.SUCCESS)


@admin.register(AccessLog)
class AccessLogAdmin(_ReadOnly):
    list_display = ("attempt_time", "logout_time", "username", "ip_address", "user_agent")
    list_filter = ("attempt_time",)
