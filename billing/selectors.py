"""Billing's reads. Client reads are always scoped to the caller: another user's object is a 404."""

import uuid

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery, Sum

from billing.models import Feature, Invoice, Order, Payment, Plan, Price, Refund, Subscription
from payments_project.errors import NotFound


def plan_list_active() -> QuerySet[Plan]:
    """Active plans with their feature keys and active prices: three queries whatever the count."""
    return (
        Plan.objects.filter(active=True)
        .order_by("code")
        .prefetch_related(
            Prefetch("features", queryset=Feature.objects.order_by("key")),
            Prefetch("prices", queryset=Price.objects.filter(active=True).order_by("unit_amount", "id")),
        )
    )


def order_get_for_user(*, user_id: uuid.UUID, order_id: uuid.UUID) -> Order:
    order = Order.objects.filter(pk=order_id, customer__user_id=user_id).first()
    if order is None:
        raise NotFound("No such order")
    return order


def _invoices_waiting_for_action() -> QuerySet[Invoice]:
    return Invoice.objects.filter(status=Invoice.Status.OPEN, requires_action=True).order_by("-created_at")


def subscription_list_for_user(*, user_id: uuid.UUID) -> QuerySet[Subscription]:
    """Newest first, each with `pending_action_url` (see pending_action_url) in the same query."""
    waiting = _invoices_waiting_for_action().filter(subscription=OuterRef("pk")).values("hosted_invoice_url")[:1]
    return (
        Subscription.objects.filter(customer__user_id=user_id)
        .select_related("plan")
        .annotate(pending_action_url=Subquery(waiting))
        .order_by("-created_at")
    )


def pending_action_url(subscription: Subscription) -> str | None:
    """The hosted URL of the subscription's newest invoice waiting for the customer (3-D Secure), if any."""
    return (
        _invoices_waiting_for_action()
        .filter(subscription=subscription)
        .values_list("hosted_invoice_url", flat=True)
        .first()
    )


def invoice_list_for_user(*, user_id: uuid.UUID) -> QuerySet[Invoice]:
    return Invoice.objects.filter(customer__user_id=user_id).order_by("-created_at", "-id")


def payment_list_for_user(*, user_id: uuid.UUID) -> QuerySet[Payment]:
    return Payment.objects.filter(customer__user_id=user_id).order_by("-created_at")


def payment_refundable_amount(payment: Payment) -> int:
    """What can still be refunded: the amount less what is refunded or on its way back (Stripe's total, or
    our refund rows if they know more, plus refunds reserved while Stripe has not answered)."""
    reserving = payment.refunds.filter(status__in=Refund.RESERVING)
    requested = reserving.filter(status=Refund.Status.REQUESTED).aggregate(total=Sum("amount"))["total"] or 0
    at_stripe = reserving.exclude(status=Refund.Status.REQUESTED).aggregate(total=Sum("amount"))["total"] or 0
    return payment.amount - (max(payment.refunded_amount, at_stripe) + requested)
