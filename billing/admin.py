"""Finance's admin: find customers, orders, subscriptions and payments; refund; export payments.

Everything Stripe owns is read-only here (it changes through webhooks). Money actions (refunds,
exports) are for the finance role only and go through the same services as the API, audited.
List pages select their related rows in the page query and skip the second full count, so they
stay fast with hundreds of thousands of payments.
"""

import csv
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from billing import services
from billing.models import Customer, Feature, Order, Payment, Plan, Price, Refund, Subscription
from billing.money import format_money, to_minor_units
from payments_project.errors import ApplicationError
from payments_project.roles import Role, RoleRestrictedAdmin, has_role

VIEWERS = (Role.FINANCE, Role.SUPPORT)


def _all_fields_read_only(model: type[Any]) -> tuple[str, ...]:
    return tuple(field.name for field in model._meta.concrete_fields)


class ReadOnlyAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    """Rows the system writes (from Stripe or from services): viewable by finance and support."""

    view_roles = VIEWERS
    show_full_result_count = False  # one COUNT per page, not two

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return _all_fields_read_only(self.model)


def _money(amount: int, currency: str) -> str:
    return format_money(amount, currency)


# --- catalog -------------------------------------------------------------------------------------


@admin.register(Feature)
class FeatureAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = VIEWERS
    list_display = ("key", "name")
    search_fields = ("key", "name")


class PriceInline(RoleRestrictedAdmin, admin.TabularInline):
    model = Price
    view_roles = VIEWERS
    extra = 0
    fields = ("stripe_price_id", "amount", "interval", "active")
    readonly_fields = ("amount",)

    @admin.display(description="amount")
    def amount(self, price: Price) -> str:
        return _money(price.unit_amount, price.currency)


@admin.register(Plan)
class PlanAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    """The catalog is loaded with `manage.py import_catalog`; only superusers edit it here."""

    view_roles = VIEWERS
    list_display = ("code", "name", "family_seats", "active")
    list_filter = ("active",)
    search_fields = ("code", "name")
    filter_horizontal = ("features",)
    inlines = (PriceInline,)


# --- customers, orders, subscriptions ------------------------------------------------------------


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = ("email", "user_id", "stripe_customer_id", "created_at", "stripe_deleted_at")
    search_fields = ("email", "=stripe_customer_id", "user_id__exact", "id__exact")
    list_filter = (("created_at", admin.DateFieldListFilter),)
    ordering = ("-created_at",)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "customer", "plan_code", "total", "status", "created_at")
    list_select_related = ("customer", "price__plan")
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id__exact", "=stripe_session_id", "customer__email", "customer__user_id__exact")
    ordering = ("-created_at",)

    @admin.display(description="plan")
    def plan_code(self, order: Order) -> str:
        return order.price.plan.code

    @admin.display(description="amount", ordering="amount")
    def total(self, order: Order) -> str:
        return _money(order.amount, order.currency)


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = (
        "stripe_subscription_id",
        "customer",
        "plan",
        "status",
        "current_period_end",
        "cancel_at_period_end",
    )
    list_select_related = ("customer", "plan")
    list_filter = ("status", "plan", "cancel_at_period_end", ("created_at", admin.DateFieldListFilter))
    search_fields = (
        "=stripe_subscription_id",
        "customer__email",
        "customer__user_id__exact",
        "=customer__stripe_customer_id",
    )
    ordering = ("-created_at",)


# --- payments and refunds ------------------------------------------------------------------------


class RefundInline(RoleRestrictedAdmin, admin.TabularInline):
    model = Refund
    view_roles = VIEWERS
    extra = 0
    fields = ("created_at", "refund_amount", "reason", "status", "requested_by", "stripe_refund_id", "failure_reason")
    readonly_fields = fields
    ordering = ("created_at",)

    @admin.display(description="amount")
    def refund_amount(self, refund: Refund) -> str:
        return _money(refund.amount, refund.currency)


class RefundForm(forms.Form):
    amount = forms.CharField(
        required=False, help_text="In the payment's currency, e.g. 12.99. Empty: everything that is left."
    )
    reason = forms.ChoiceField(choices=Refund.Reason.choices, initial=Refund.Reason.REQUESTED_BY_CUSTOMER)
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    # Made when the page is shown: submitting the same page twice refunds once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, payment: Payment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.payment = payment

    def clean_amount(self) -> int | None:
        raw = self.cleaned_data["amount"].strip()
        if not raw:
            return None
        try:
            value = to_minor_units(raw, self.payment.currency)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        if value <= 0:
            raise forms.ValidationError("A refund is a positive amount")
        return value


CSV_COLUMNS = (
    "payment_id",
    "created_at",
    "user_id",
    "email",
    "status",
    "amount",
    "refunded_amount",
    "currency",
    "amount_minor",
    "refunded_minor",
    "stripe_payment_intent_id",
    "stripe_invoice_id",
    "stripe_charge_id",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value: Any) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas: quote them (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _payment_rows(payments: Iterable[Payment]) -> Iterator[list[str]]:
    yield list(CSV_COLUMNS)
    for p in payments:
        yield [
            _csv_safe(value)
            for value in (
                p.id,
                p.created_at.isoformat(),
                p.customer.user_id,
                p.customer.email,
                p.status,
                format_money(p.amount, p.currency).split(" ")[0],
                format_money(p.refunded_amount, p.currency).split(" ")[0],
                p.currency.upper(),
                p.amount,
                p.refunded_amount,
                p.stripe_payment_intent_id,
                p.stripe_invoice_id,
                p.stripe_charge_id,
            )
        ]


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "customer", "total", "refunded", "status")
    list_select_related = ("customer",)
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    search_fields = (
        "id__exact",
        "=stripe_payment_intent_id",
        "=stripe_invoice_id",
        "=stripe_charge_id",
        "customer__email",
        "customer__user_id__exact",
        "=customer__stripe_customer_id",
    )
    ordering = ("-created_at",)
    inlines = (RefundInline,)
    actions = ("refund_payment", "export_csv")

    @admin.display(description="amount", ordering="amount")
    def total(self, payment: Payment) -> str:
        return _money(payment.amount, payment.currency)

    @admin.display(description="refunded", ordering="refunded_amount")
    def refunded(self, payment: Payment) -> str:
        return _money(payment.refunded_amount, payment.currency)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not has_role(request.user, Role.FINANCE):  # support sees payments, finance moves money
            actions.pop("refund_payment", None)
            actions.pop("export_csv", None)
        return actions

    @admin.action(description="Refund the selected payment")
    def refund_payment(self, request: HttpRequest, queryset: QuerySet[Payment]) -> HttpResponse | None:
        if not has_role(request.user, Role.FINANCE):
            raise PermissionDenied
        payments = list(queryset.select_related("customer")[:2])
        if len(payments) != 1:
            self.message_user(request, "Select exactly one payment to refund.", messages.WARNING)
            return None
        payment = payments[0]
        confirmed = request.POST.get("confirm") == "yes"
        form = RefundForm(
            request.POST if confirmed else None,
            payment=payment,
            initial={"idempotency_key": uuid.uuid4().hex},
        )
        if confirmed and form.is_valid():
            try:
                refund = services.refund_issue(
                    payment_id=payment.id,
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    note=form.cleaned_data["note"],
                    requested_by=request.user.get_username(),
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    request=request,
                )
            except ApplicationError as error:
                form.add_error(None, error.detail)
            else:
                level = messages.SUCCESS if refund.status != Refund.Status.FAILED else messages.ERROR
                self.message_user(
                    request,
                    f"Refund of {_money(refund.amount, refund.currency)} on payment {payment.id}: {refund.status}.",
                    level,
                )
                return None
        left = payment.amount - payment.refunded_amount
        context = {
            **self.admin_site.each_context(request),
            "title": "Refund a payment",
            "opts": self.model._meta,
            "payment": payment,
            "amount": _money(payment.amount, payment.currency),
            "refunded": _money(payment.refunded_amount, payment.currency),
            "left": _money(left, payment.currency),
            "form": form,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/billing/payment/refund.html", context)

    @admin.action(description="Export the selected payments as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Payment]) -> StreamingHttpResponse:
        if not has_role(request.user, Role.FINANCE):
            raise PermissionDenied
        rows = queryset.select_related("customer").order_by("created_at", "id").iterator(chunk_size=2000)
        writer = csv.writer(_Echo())
        response = StreamingHttpResponse((writer.writerow(row) for row in _payment_rows(rows)), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="payments-{stamp}.csv"'
        return response
