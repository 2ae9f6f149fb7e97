"""The audit trail in admin: compliance only, read-only, filterable, exportable as CSV."""

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from gdpr.audit import ActorType, AuditAction, record
from gdpr.models import AuditEvent
from payments_project.roles import Role, RoleRestrictedAdmin, has_role

CSV_COLUMNS = (
    "seq",
    "id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "ip",
    "user_agent",
    "request_id",
    "metadata",
    "personal",
    "prev_hash",
    "hash",
)
# A cell starting with one of these is a formula to a spreadsheet: neutralise it (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


class _Echo:
    """csv.writer's file: hand each written line straight back, so the export streams."""

    def write(self, value: str) -> str:
        return value


def audit_csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in events:
        yield writer.writerow([_cell(getattr(event, column)) for column in CSV_COLUMNS])


@admin.register(AuditEvent)
class AuditEventAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = (Role.COMPLIANCE,)
    list_display = ("seq", "occurred_at", "action", "actor_type", "actor_id", "target_type", "target_id", "ip")
    list_filter = ("action", "actor_type", "target_type", ("occurred_at", admin.DateFieldListFilter))
    search_fields = ("=actor_id", "=target_id", "=request_id", "=id")
    date_hierarchy = "occurred_at"
    ordering = ("-seq",)
    list_per_page = 100
    show_full_result_count = False  # counting a long trail on every page is slow
    actions = ["export_csv"]
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    # Read-only for everyone, superusers included: the trail is appended by the system only.
    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_export_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.COMPLIANCE)

    @admin.action(description="Export selected events as CSV", permissions=["export"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> StreamingHttpResponse:
        events = queryset.order_by("seq")
        with transaction.atomic():
            record(
                action=AuditAction.AUDIT_EXPORTED,
                actor_type=ActorType.STAFF,
                actor_id=str(request.user.pk),
                target_type="audit_trail",
                metadata={"events": events.count(), "filters": request.GET.urlencode()[:500]},
                request=request,
            )
        response = StreamingHttpResponse(audit_csv_rows(events.iterator(chunk_size=2000)), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.csv"'
        return response
