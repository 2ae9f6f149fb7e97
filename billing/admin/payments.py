"""Payments: read-only for finance and support; finance refunds one (form, then a confirmation page with
the parsed amount) and exports them as CSV."""

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import OperationalError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from billing import services
from billing.admin.common import ReadOnlyAdmin, amount_only, date_range, money, require_finance
from billing.models import Dispute, Payment, Refund
from billing.money import to_minor_units
from billing.selectors import payment_refundable_amount
from payments_project.errors import ApplicationError, database_busy
from payments_project.roles import Role, RoleRestrictedAdmin, has_role


class RefundInline(RoleRestrictedAdmin, admin.TabularInline):
    model = Refund
    view_roles = (Role.FINANCE, Role.SUPPORT)
    extra = 0
    fields = ("created_at", "refund_amount", "reason", "status", "requested_by", "stripe_refund_id", "failure_reason")
    readonly_fields = fields
    ordering = ("created_at",)

    @admin.display(description="amount")
    def refund_amount(self, refund: Refund) -> str:
        return money(refund.amount, refund.currency)


class DisputeInline(RoleRestrictedAdmin, admin.TabularInline):
    model = Dispute
    view_roles = (Role.FINANCE, Role.SUPPORT)
    extra = 0
    fields = ("created_at", "disputed_amount", "reversed", "reason", "status", "evidence_due_by", "stripe_dispute_id")
    readonly_fields = fields
    ordering = ("created_at",)

    @admin.display(description="amount")
    def disputed_amount(self, dispute: Dispute) -> str:
        return money(dispute.amount, dispute.currency)

    @admin.display(description="reversed")
    def reversed(self, dispute: Dispute) -> str:
        return money(dispute.reversed_amount, dispute.currency)


class RefundForm(forms.Form):
    """What finance types: the amount is parsed strictly in the payment's currency."""

    amount = forms.CharField(
        required=False, help_text="In the payment's currency, with a dot: 12.99. Empty: everything that is left."
    )
    reason = forms.ChoiceField(choices=Refund.Reason.choices, initial=Refund.Reason.REQUESTED_BY_CUSTOMER)
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)
    # Made when the form is first shown and carried to the confirmation: confirming twice refunds once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, payment: Payment, left: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.payment, self.left = payment, left

    def clean_amount(self) -> int:
        raw = self.cleaned_data["amount"].strip()
        if not raw:
            return self.left
        try:
            value = to_minor_units(raw, self.payment.currency)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        if value <= 0:
            raise forms.ValidationError("A refund is a positive amount")
        if value > self.left:
            raise forms.ValidationError(f"Only {money(self.left, self.payment.currency)} is left to refund")
        return value


class RefundConfirmForm(forms.Form):
    """The confirmation page posts back exactly what it showed."""

    amount_minor = forms.IntegerField(min_value=1, widget=forms.HiddenInput)
    reason = forms.ChoiceField(choices=Refund.Reason.choices, widget=forms.HiddenInput)
    note = forms.CharField(required=False, widget=forms.HiddenInput, max_length=2000)
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "customer", "total", "refunded", "status")
    list_select_related = ("customer",)
    list_filter = ("status", date_range("created_at"))
    date_hierarchy = "created_at"
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
    inlines = (RefundInline, DisputeInline)
    actions = ("refund_payment", "export_csv")
    finance_actions = ("refund_payment", "export_csv")
    change_form_template = "admin/billing/payment/change_form.html"
    stripe_id_fields = ("stripe_payment_intent_id", "stripe_invoice_id", "stripe_charge_id")
    csv_name = "payments"
    csv_select_related = ("customer",)
    csv_columns = (
        ("payment_id", lambda p: p.id),
        ("created_at", lambda p: p.created_at),
        ("user_id", lambda p: p.customer.user_id),
        ("email", lambda p: p.customer.email),
        ("status", lambda p: p.status),
        ("amount", lambda p: amount_only(p.amount, p.currency)),
        ("refunded_amount", lambda p: amount_only(p.refunded_amount, p.currency)),
        ("currency", lambda p: p.currency.upper()),
        ("amount_minor", lambda p: p.amount),
        ("refunded_minor", lambda p: p.refunded_amount),
        ("stripe_payment_intent_id", lambda p: p.stripe_payment_intent_id),
        ("stripe_invoice_id", lambda p: p.stripe_invoice_id),
        ("stripe_charge_id", lambda p: p.stripe_charge_id),
    )

    @admin.display(description="amount", ordering="amount")
    def total(self, payment: Payment) -> str:
        return money(payment.amount, payment.currency)

    @admin.display(description="refunded", ordering="refunded_amount")
    def refunded(self, payment: Payment) -> str:
        return money(payment.refunded_amount, payment.currency)

    def get_urls(self) -> list[URLPattern]:
        refund = path(
            "<path:object_id>/refund/",
            self.admin_site.admin_view(self.refund_view),
            name="billing_payment_refund",
        )
        return [refund, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {**(extra_context or {}), "can_refund": has_role(request.user, Role.FINANCE)}
        return super().change_view(request, object_id, form_url, extra)

    @admin.action(description="Refund the selected payment")
    def refund_payment(self, request: HttpRequest, queryset: QuerySet[Payment]) -> HttpResponse | None:
        require_finance(request)
        ids = list(queryset.values_list("pk", flat=True)[:2])
        if len(ids) != 1:
            self.message_user(request, "Select exactly one payment to refund.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:billing_payment_refund", args=[ids[0]]))

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Refund a payment in two steps: the form, then a confirmation page; only confirming refunds."""
        require_finance(request)
        payment = self.get_object(request, object_id)
        if payment is None:
            raise Http404("No such payment")
        left = payment_refundable_amount(payment)
        if request.method == "POST" and request.POST.get("step") == "confirm":
            confirm = RefundConfirmForm(request.POST)
            if confirm.is_valid():
                done = self._refund(request, payment, confirm)
                if done is not None:
                    return done
            return self._refund_page(request, payment, left, RefundForm(payment=payment, left=left), confirm)
        form = RefundForm(
            request.POST if request.method == "POST" else None,
            payment=payment,
            left=left,
            initial={"idempotency_key": uuid.uuid4().hex},
        )
        if form.is_bound and form.is_valid():
            confirm = RefundConfirmForm(
                initial={
                    "amount_minor": form.cleaned_data["amount"],
                    "reason": form.cleaned_data["reason"],
                    "note": form.cleaned_data["note"],
                    "idempotency_key": form.cleaned_data["idempotency_key"],
                }
            )
            return self._refund_page(request, payment, left, form, confirm)
        return self._refund_page(request, payment, left, form, None)

    def _refund(self, request: HttpRequest, payment: Payment, confirm: RefundConfirmForm) -> HttpResponse | None:
        try:
            refund = services.refund_issue(
                payment_id=payment.id,
                amount=confirm.cleaned_data["amount_minor"],
                reason=confirm.cleaned_data["reason"],
                note=confirm.cleaned_data["note"],
                requested_by=request.user.get_username(),
                idempotency_key=confirm.cleaned_data["idempotency_key"],
                request=request,
            )
        except ApplicationError as error:
            confirm.add_error(None, error.detail)
            return None
        except OperationalError as error:
            if (busy := database_busy(error)) is None:
                raise
            confirm.add_error(None, busy.detail)  # the payment is locked elsewhere: nothing was changed
            return None
        level = messages.ERROR if refund.status == Refund.Status.FAILED else messages.SUCCESS
        self.message_user(
            request,
            f"Refund of {money(refund.amount, refund.currency)} on payment {payment.id}: {refund.status}.",
            level,
        )
        return HttpResponseRedirect(reverse("admin:billing_refund_changelist") + f"?payment__id__exact={payment.id}")

    def _refund_page(
        self,
        request: HttpRequest,
        payment: Payment,
        left: int,
        form: RefundForm,
        confirm: RefundConfirmForm | None,
    ) -> TemplateResponse:
        amount = confirm.initial.get("amount_minor") or confirm.data.get("amount_minor") if confirm else None
        amount = int(amount) if amount else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Confirm the refund" if confirm else "Refund a payment",
            "opts": self.opts,
            "original": payment,
            "payment": payment,
            "currency": payment.currency.upper(),
            "paid": money(payment.amount, payment.currency),
            "refunded": money(payment.refunded_amount, payment.currency),
            "left": money(left, payment.currency),
            "amount": money(amount, payment.currency) if amount else None,
            "left_after": money(left - amount, payment.currency) if amount else None,
            "form": form,
            "confirm": confirm,
        }
        return TemplateResponse(request, "admin/billing/payment/refund.html", context)
