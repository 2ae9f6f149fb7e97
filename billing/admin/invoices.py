"""Invoices and disputes: read-only for finance and support (Stripe owns them; they change through webhooks).

Disputes open first: those still waiting for evidence are what finance acts on (in Stripe's dashboard,
one click away); a lost one shows what the bank took back.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.admin.common import ReadOnlyAdmin, amount_only, date_range, money
from billing.models import Dispute, Invoice


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ("number_or_id", "created_at", "customer", "due", "paid", "status", "requires_action")
    list_select_related = ("customer",)
    list_filter = ("status", "requires_action", date_range("created_at"))
    date_hierarchy = "created_at"
    search_fields = (
        "id__exact",
        "=number",
        "=stripe_invoice_id",
        "customer__email",
        "customer__user_id__exact",
        "=customer__stripe_customer_id",
        "=subscription__stripe_subscription_id",
    )
    search_help_text = "Invoice number, id or Stripe id; customer email, user id or Stripe id"
    ordering = ("-created_at",)
    actions = ("export_csv",)
    stripe_id_fields = ("stripe_invoice_id",)
    csv_name = "invoices"
    csv_select_related = ("customer",)
    csv_columns = (
        ("invoice_id", lambda i: i.id),
        ("number", lambda i: i.number),
        ("created_at", lambda i: i.created_at),
        ("user_id", lambda i: i.customer.user_id),
        ("status", lambda i: i.status),
        ("amount_due", lambda i: amount_only(i.amount_due, i.currency)),
        ("amount_paid", lambda i: amount_only(i.amount_paid, i.currency)),
        ("currency", lambda i: i.currency.upper()),
        ("stripe_invoice_id", lambda i: i.stripe_invoice_id),
    )

    @admin.display(description="invoice", ordering="number")
    def number_or_id(self, invoice: Invoice) -> str:
        return invoice.number or invoice.stripe_invoice_id

    @admin.display(description="due", ordering="amount_due")
    def due(self, invoice: Invoice) -> str:
        return money(invoice.amount_due, invoice.currency)

    @admin.display(description="paid", ordering="amount_paid")
    def paid(self, invoice: Invoice) -> str:
        return money(invoice.amount_paid, invoice.currency)


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    list_display = (
        "stripe_dispute_id",
        "created_at",
        "payment_link",
        "customer",
        "disputed",
        "reversed",
        "reason",
        "status",
        "evidence_due_by",
    )
    list_select_related = ("payment__customer",)
    list_filter = ("status", "reason", date_range("created_at"))
    date_hierarchy = "created_at"
    search_fields = (
        "id__exact",
        "=stripe_dispute_id",
        "payment__id__exact",
        "=payment__stripe_payment_intent_id",
        "=payment__stripe_charge_id",
        "payment__customer__email",
        "payment__customer__user_id__exact",
    )
    search_help_text = "Dispute or payment: id or Stripe id; customer email or user id"
    ordering = ("-created_at",)
    actions = ("export_csv",)
    stripe_id_fields = ("stripe_dispute_id",)
    csv_name = "disputes"
    csv_select_related = ("payment__customer",)
    csv_columns = (
        ("dispute_id", lambda d: d.id),
        ("created_at", lambda d: d.created_at),
        ("payment_id", lambda d: d.payment_id),
        ("user_id", lambda d: d.payment.customer.user_id),
        ("status", lambda d: d.status),
        ("reason", lambda d: d.reason),
        ("amount", lambda d: amount_only(d.amount, d.currency)),
        ("reversed_amount", lambda d: amount_only(d.reversed_amount, d.currency)),
        ("currency", lambda d: d.currency.upper()),
        ("closed_at", lambda d: d.closed_at),
        ("stripe_dispute_id", lambda d: d.stripe_dispute_id),
        ("stripe_charge_id", lambda d: d.payment.stripe_charge_id),
    )

    @admin.display(description="payment", ordering="payment__created_at")
    def payment_link(self, dispute: Dispute) -> SafeString:
        url = reverse("admin:billing_payment_change", args=[dispute.payment_id])
        return format_html('<a href="{}">{}</a>', url, dispute.payment_id)

    @admin.display(description="customer")
    def customer(self, dispute: Dispute) -> str:
        return str(dispute.payment.customer)

    @admin.display(description="disputed", ordering="amount")
    def disputed(self, dispute: Dispute) -> str:
        return money(dispute.amount, dispute.currency)

    @admin.display(description="reversed", ordering="reversed_amount")
    def reversed(self, dispute: Dispute) -> str:
        return money(dispute.reversed_amount, dispute.currency)
