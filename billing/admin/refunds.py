"""Every refund, wherever it was made (our admin, or Stripe's dashboard), with the ones stuck in
`requested` (Stripe did not answer) one filter away; finance settles those now or leaves them to beat."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing import services
from billing.admin.common import ReadOnlyAdmin, amount_only, date_range, money, require_finance
from billing.models import Refund


class StuckFilter(admin.SimpleListFilter):
    """Requested refunds whose request is no longer waiting for Stripe: the sweep's work."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Stuck in requested")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Refund]) -> QuerySet[Refund]:
        if self.value() == "yes":
            return queryset.filter(status=Refund.Status.REQUESTED, lease_until__lt=timezone.now())
        return queryset


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "payment_link", "customer", "total", "reason", "status", "requested_by")
    list_select_related = ("payment__customer",)
    list_filter = ("status", StuckFilter, "reason", date_range("created_at"))
    date_hierarchy = "created_at"
    search_fields = (
        "id__exact",
        "payment__id__exact",
        "=stripe_refund_id",
        "=payment__stripe_payment_intent_id",
        "=payment__stripe_charge_id",
        "payment__customer__email",
        "payment__customer__user_id__exact",
        "=payment__customer__stripe_customer_id",
    )
    search_help_text = "Refund, payment or customer: id, Stripe id, email or user id"
    ordering = ("-created_at",)
    actions = ("settle_with_stripe", "export_csv")
    finance_actions = ("settle_with_stripe", "export_csv")
    stripe_id_fields = ("stripe_refund_id",)
    csv_name = "refunds"
    csv_select_related = ("payment__customer",)
    csv_columns = (
        ("refund_id", lambda r: r.id),
        ("created_at", lambda r: r.created_at),
        ("payment_id", lambda r: r.payment_id),
        ("user_id", lambda r: r.payment.customer.user_id),
        ("email", lambda r: r.payment.customer.email),
        ("status", lambda r: r.status),
        ("reason", lambda r: r.reason),
        ("amount", lambda r: amount_only(r.amount, r.currency)),
        ("currency", lambda r: r.currency.upper()),
        ("amount_minor", lambda r: r.amount),
        ("requested_by", lambda r: r.requested_by),
        ("stripe_refund_id", lambda r: r.stripe_refund_id),
        ("stripe_payment_intent_id", lambda r: r.payment.stripe_payment_intent_id),
        ("stripe_charge_id", lambda r: r.payment.stripe_charge_id),
        ("failure_reason", lambda r: r.failure_reason),
    )

    @admin.display(description="payment", ordering="payment__created_at")
    def payment_link(self, refund: Refund) -> SafeString:
        url = reverse("admin:billing_payment_change", args=[refund.payment_id])
        return format_html('<a href="{}">{}</a>', url, refund.payment_id)

    @admin.display(description="customer")
    def customer(self, refund: Refund) -> str:
        return str(refund.payment.customer)

    @admin.display(description="amount", ordering="amount")
    def total(self, refund: Refund) -> str:
        return money(refund.amount, refund.currency)

    @admin.action(description="Settle the selected stuck refunds with Stripe now")
    def settle_with_stripe(self, request: HttpRequest, queryset: QuerySet[Refund]) -> None:
        require_finance(request)
        ids = list(queryset.filter(status=Refund.Status.REQUESTED).values_list("pk", flat=True))
        settled = services.refunds_resolve_stuck(refund_ids=ids, limit=len(ids))
        left = len(ids) - settled
        level = messages.SUCCESS if not left else messages.WARNING
        self.message_user(
            request,
            f"{settled} refund(s) settled; {left} still waiting (Stripe unreachable, or a request still holds it).",
            level,
        )
