"""What billing's admin pages share: read-only lists for finance and support, date-range filters, "open in
Stripe" links, and finance-only actions (CSV exports among them) that answer 403 to anyone else."""

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.safestring import SafeString
from rangefilter.filters import DateRangeFilterBuilder

from billing.money import format_money
from billing.stripe_dashboard import stripe_links
from gdpr.spreadsheet import csv_export_response
from payments_project.roles import Role, RoleRestrictedAdmin, has_role

VIEWERS = (Role.FINANCE, Role.SUPPORT)
EXPORT_CHUNK = 2000


def money(amount: int, currency: str) -> str:
    return format_money(amount, currency)


def amount_only(amount: int, currency: str) -> str:
    """The decimal amount without its code (CSV columns keep the currency apart): 1299 eur -> "12.99"."""
    return format_money(amount, currency).split(" ")[0].replace(",", "")


def date_range(field: str) -> tuple[str, Any]:
    """A from/to date filter on `field` (django-admin-rangefilter): month-end closes by date range."""
    return (field, DateRangeFilterBuilder())


class ReadOnlyAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    """Rows the system writes (from Stripe or from services): viewable by finance and support.

    `stripe_id_fields` name the model's Stripe ids: the list gets an "open in Stripe" column and the
    page the same links. `finance_actions` are refused with 403 to anyone without the finance role, even
    posted directly. `csv_columns` ((header, value of a row), ...) make the finance-only CSV export.
    """

    view_roles = VIEWERS
    show_full_result_count = False  # one COUNT per page, not two
    stripe_id_fields: ClassVar[tuple[str, ...]] = ()
    finance_actions: ClassVar[tuple[str, ...]] = ("export_csv",)
    csv_name = ""
    csv_columns: ClassVar[tuple[tuple[str, Callable[[Any], Any]], ...]] = ()
    csv_select_related: ClassVar[tuple[str, ...]] = ()

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(field.name for field in self.model._meta.concrete_fields)
        return (*fields, "open_in_stripe") if self.stripe_id_fields else fields

    @admin.display(description="Stripe")
    def open_in_stripe(self, obj: Any) -> SafeString:
        return stripe_links(*(getattr(obj, name) for name in self.stripe_id_fields))

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = tuple(super().get_list_display(request))
        return (*columns, "open_in_stripe") if self.stripe_id_fields else columns

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "POST" and request.POST.get("action") in self.finance_actions:
            require_finance(request)
        return super().changelist_view(request, extra_context)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not has_role(request.user, Role.FINANCE):  # support sees, finance moves money and exports
            for name in self.finance_actions:
                actions.pop(name, None)
        if not self.csv_columns:
            actions.pop("export_csv", None)
        return actions

    @admin.action(description="Export the selected rows as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> StreamingHttpResponse:
        require_finance(request)
        rows = queryset.select_related(*self.csv_select_related).order_by("created_at", "pk")
        return csv_export_response(
            request,
            name=self.csv_name,
            header=[header for header, _ in self.csv_columns],
            rows=self._csv_rows(rows.iterator(chunk_size=EXPORT_CHUNK)),
            count=queryset.count(),
        )

    def _csv_rows(self, objects: Iterator[Any]) -> Iterator[list[Any]]:
        for obj in objects:
            yield [value(obj) for _, value in self.csv_columns]


def require_finance(request: HttpRequest) -> None:
    if not has_role(request.user, Role.FINANCE):
        raise PermissionDenied
