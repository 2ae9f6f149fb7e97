"""Compliance's admin: the audit trail (read-only, filterable, exportable as CSV), and data-subject
requests with their steps, status and reason (retry and cancel are audited)."""

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from gdpr.audit import PERSONAL_REFERENCE_KEYS, AuditAction
from gdpr.models import AuditEvent, DataSubjectRequest, ErasureStep
from gdpr.registry import pseudonym_for
from gdpr.services import data_request_cancel, data_request_retry
from gdpr.spreadsheet import csv_export_response
from payments_project.errors import ApplicationError
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
# Columns read from the event's personal side row (absent: none was kept, or erasure deleted it).
_PERSONAL_COLUMNS = {"ip": "ip", "user_agent": "user_agent", "personal": "metadata"}


def _personal(event: AuditEvent, column: str) -> Any:
    personal = getattr(event, "personal", None)  # the reverse one-to-one raises an AttributeError when absent
    return getattr(personal, _PERSONAL_COLUMNS[column]) if personal is not None else None


def _value(event: AuditEvent, column: str) -> Any:
    return _personal(event, column) if column in _PERSONAL_COLUMNS else getattr(event, column)


def _searched_pseudonym(search_term: str) -> str | None:
    """The pseudonym of the user an admin search names by id, if it does: how their rows are found."""
    try:
        return pseudonym_for(uuid.UUID(search_term.strip()))
    except ValueError:
        return None


def audit_csv_rows(events: Iterable[AuditEvent]) -> Iterator[list[Any]]:
    for event in events:
        values = (_value(event, column) for column in CSV_COLUMNS)
        # Metadata as the trail has always exported it (Python's dict text), not JSON.
        yield [str(value) if isinstance(value, dict) else value for value in values]


@admin.register(AuditEvent)
class AuditEventAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = (Role.COMPLIANCE,)
    list_display = ("seq", "occurred_at", "action", "actor_type", "actor_id", "target_type", "target_id", "ip")
    list_select_related = ("personal",)
    list_filter = ("action", "actor_type", "target_type", ("occurred_at", admin.DateFieldListFilter))
    search_fields = ("=actor_id", "=target_id", "=request_id", "=id")
    date_hierarchy = "occurred_at"
    ordering = ("-seq",)
    list_per_page = 100
    show_full_result_count = False  # counting a long trail on every page is slow
    actions = ["export_csv"]
    readonly_fields = [*(field.name for field in AuditEvent._meta.fields), "ip", "user_agent", "personal_metadata"]

    # The side data, where it is still there.
    @admin.display(description="ip")
    def ip(self, event: AuditEvent) -> Any:
        return _personal(event, "ip")

    @admin.display(description="user agent")
    def user_agent(self, event: AuditEvent) -> Any:
        return _personal(event, "user_agent")

    @admin.display(description="personal metadata")
    def personal_metadata(self, event: AuditEvent) -> Any:
        return _personal(event, "personal")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent], search_term: str
    ) -> tuple[QuerySet[AuditEvent], bool]:
        """A user id finds the events by or about that user: the trail names them by their pseudonym."""
        results, duplicates = super().get_search_results(request, queryset, search_term)
        pseudonym = _searched_pseudonym(search_term)
        if pseudonym is None:
            return results, duplicates
        naming = Q(actor_id=pseudonym) | Q(target_id=pseudonym)
        for key in PERSONAL_REFERENCE_KEYS:
            naming |= Q(**{f"metadata__{key}": pseudonym})
        return results | queryset.filter(naming), duplicates

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
        events = queryset.select_related("personal").order_by("seq")
        return csv_export_response(
            request,
            name="audit-trail",
            header=CSV_COLUMNS,
            rows=audit_csv_rows(events.iterator(chunk_size=2000)),
            count=events.count(),
            action=AuditAction.AUDIT_EXPORTED,
            count_key="events",
        )


# --- Data-subject requests (export, erasure): compliance only ------------------------------------------------


class ErasureStepInline(RoleRestrictedAdmin, admin.TabularInline):
    model = ErasureStep
    view_roles = (Role.COMPLIANCE,)
    extra = 0
    can_delete = False
    fields = ("provider", "order", "status", "attempts", "last_error", "completed_at", "updated_at")
    readonly_fields = fields
    ordering = ("order", "provider")


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    """Every export and erasure with its steps, status and reason; retry and cancel are audited."""

    view_roles = (Role.COMPLIANCE,)
    list_display = ("id", "kind", "status", "age_days", "attempts", "created_at", "completed_at", "short_reason")
    list_filter = ("kind", "status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=id", "=subject")
    ordering = ("-created_at",)
    inlines = (ErasureStepInline,)
    actions = ("retry", "cancel")
    readonly_fields = [field.name for field in DataSubjectRequest._meta.fields]

    @admin.display(description="age (days)")
    def age_days(self, data_request: DataSubjectRequest) -> int:
        return (timezone.now() - data_request.created_at).days

    @admin.display(description="reason")
    def short_reason(self, data_request: DataSubjectRequest) -> str:
        reason = data_request.last_error
        return reason if len(reason) <= 120 else reason[:119] + "…"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest], search_term: str
    ) -> tuple[QuerySet[DataSubjectRequest], bool]:
        """A user id finds that user's requests, even after an erasure removed it from them (by pseudonym)."""
        results, duplicates = super().get_search_results(request, queryset, search_term)
        pseudonym = _searched_pseudonym(search_term)
        return (results if pseudonym is None else results | queryset.filter(subject=pseudonym)), duplicates

    def has_compliance_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.COMPLIANCE)

    @admin.action(description="Retry the selected failed requests", permissions=["compliance"])
    def retry(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        retried = 0
        for data_request in queryset:
            try:
                retried += data_request_retry(
                    request_id=data_request.id, staff_id=str(request.user.pk), request=request
                )
            except ApplicationError as exc:
                self.message_user(request, f"{data_request}: {exc.detail}", messages.ERROR)
        self.message_user(request, f"{retried} request(s) queued again; only failed ones can be retried.")

    @admin.action(description="Cancel the selected requests", permissions=["compliance"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        canceled = sum(
            data_request_cancel(request_id=data_request.id, staff_id=str(request.user.pk), request=request)
            for data_request in queryset
        )
        self.message_user(
            request, f"{canceled} request(s) canceled; a running one cannot be, until its step has finished."
        )
