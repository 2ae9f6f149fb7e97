import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from payments_project.roles import Role, RoleRestrictedAdmin, has_role
from tasks.models import OutboxMessage
from tasks.outbox_ops import outbox_message_replay

REPLAY_ROLES = (Role.FINANCE, Role.OPS)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    """Read-only: what was emitted, whether it went out, and why not. Dead messages can be replayed."""

    view_roles = (Role.FINANCE, Role.OPS, Role.SUPPORT)
    list_display = ("id", "type", "status", "attempts", "created_at", "next_attempt_at", "published_at", "error")
    list_filter = ("status", "type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=id", "=subject")
    ordering = ("-id",)  # UUIDv7: newest first, on the primary key
    actions = ("replay",)
    exclude = ("data",)
    readonly_fields = (
        "id",
        "type",
        "subject",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
        "published_at",
        "traceparent",
        "payload",
    )
    show_full_result_count = False  # no COUNT(*) over a large table per page

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # nobody edits an event; replay is the one way to act on one

    @admin.display(description="last error")
    def error(self, message: OutboxMessage) -> str:
        return message.last_error[:120]

    @admin.display(description="data")
    def payload(self, message: OutboxMessage) -> str:
        return format_html("<pre>{}</pre>", json.dumps(message.data, indent=2, sort_keys=True))

    @admin.action(description="Replay the selected dead messages (finance, ops)")
    def replay(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        if not has_role(request.user, *REPLAY_ROLES):
            raise PermissionDenied
        replayed = sum(
            outbox_message_replay(message_id=message_id, staff_id=str(request.user.pk), request=request)
            for message_id in queryset.values_list("id", flat=True)
        )
        skipped = f"; {n} not dead, left alone" if (n := queryset.count() - replayed) else ""
        self.message_user(request, f"{replayed} message(s) queued for publishing again{skipped}.", messages.SUCCESS)
