"""The client API's shapes (API.md): what goes in, what comes out."""

import copy
import re
import uuid
from typing import Any, ClassVar

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import Invoice, Order, Payment, Plan, Price, Subscription
from billing.selectors import pending_action_url
from payments_project.inputs import StrictInput, StrictUUIDField
from payments_project.return_urls import ReturnURLField, takes_return_url


class PriceOutput(serializers.ModelSerializer[Price]):
    class Meta:
        model = Price
        fields = ["id", "currency", "unit_amount", "interval"]


class PlanOutput(serializers.ModelSerializer[Plan]):
    features = serializers.SerializerMethodField()
    prices = PriceOutput(many=True)

    class Meta:
        model = Plan
        fields = ["code", "name", "features", "family_seats", "prices"]

    def get_features(self, plan: Plan) -> list[str]:
        return [feature.key for feature in plan.features.all()]  # prefetched by the selector


class CheckoutInput(StrictInput):
    price_id = StrictUUIDField()
    success_url = ReturnURLField()
    cancel_url = ReturnURLField()


_CHECKOUT_FIELDS = frozenset({"price_id", "success_url", "cancel_url"})
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # as str(UUID) writes


def common_checkout_input(data: Any) -> dict[str, Any] | None:
    """CheckoutInput's validated data when `data` is the common body: the price id as str(UUID) writes it,
    return URLs the field takes as they are (remembered: clients send the same few). Recognised without the
    serializer, whose per-instance field copies and validators were 7% of a checkout's CPU (issue 18). None
    for any other body: CheckoutInput judges it."""
    if type(data) is not dict or data.keys() != _CHECKOUT_FIELDS:
        return None
    price_id, success_url, cancel_url = data["price_id"], data["success_url"], data["cancel_url"]
    if type(price_id) is not str or not _CANONICAL_UUID.fullmatch(price_id):
        return None
    if not (takes_return_url(success_url) and takes_return_url(cancel_url)):
        return None
    return {"price_id": uuid.UUID(price_id), "success_url": success_url, "cancel_url": cancel_url}


def _open_checkout_url(order: Order) -> str | None:
    # A URL the client may still open; a completed, expired or failed order has none.
    return order.checkout_url if order.status == Order.Status.OPEN and order.checkout_url else None


class OrderOutput(serializers.ModelSerializer[Order]):
    order_id = serializers.UUIDField(source="id")
    checkout_url = serializers.SerializerMethodField()
    price_id = serializers.UUIDField()

    class Meta:
        model = Order
        fields = [
            "order_id",
            "status",
            "checkout_url",
            "stripe_session_id",
            "price_id",
            "amount",
            "currency",
            "created_at",
        ]

    # Every checkout answers with one: the fields DRF derives from the model are derived once per process
    # (ModelSerializer otherwise repeats it for each instance); each instance gets its own copies.
    _derived_fields: ClassVar[dict[str, serializers.Field[Any, Any, Any, Any]] | None] = None

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        if OrderOutput._derived_fields is None:
            OrderOutput._derived_fields = super().get_fields()
        return copy.deepcopy(OrderOutput._derived_fields)

    def get_checkout_url(self, order: Order) -> str | None:
        return _open_checkout_url(order)


def order_body(order: Order) -> dict[str, Any]:
    """OrderOutput's body, built by hand: every checkout answers with one, and the shape is fixed."""
    session_id = order.stripe_session_id
    return {
        "order_id": str(order.id),
        "status": str(order.status),
        "checkout_url": _open_checkout_url(order),
        "stripe_session_id": None if session_id is None else str(session_id),
        "price_id": str(order.price_id),
        "amount": int(order.amount),
        "currency": str(order.currency),
        "created_at": order.created_at.isoformat().replace("+00:00", "Z"),  # aware UTC, as DRF writes it
    }


class SubscriptionOutput(serializers.ModelSerializer[Subscription]):
    """`requires_action`: an invoice of the subscription waits for the customer (3-D Secure); they confirm
    it at `action_url`, Stripe's hosted invoice page. `trial_end` while the subscription is trialing."""

    plan: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    requires_action = serializers.SerializerMethodField()
    action_url = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = [
            "id",
            "plan",
            "status",
            "current_period_end",
            "cancel_at_period_end",
            "trial_end",
            "requires_action",
            "action_url",
        ]

    def _action_url(self, subscription: Subscription) -> str | None:
        if not hasattr(subscription, "pending_action_url"):  # not from the list selector: look it up
            subscription.pending_action_url = pending_action_url(subscription)  # type: ignore[attr-defined]
        found: str | None = subscription.pending_action_url  # type: ignore[attr-defined]
        return found

    def get_requires_action(self, subscription: Subscription) -> bool:
        return self._action_url(subscription) is not None

    def get_action_url(self, subscription: Subscription) -> str | None:
        return self._action_url(subscription) or None


class InvoiceOutput(serializers.ModelSerializer[Invoice]):
    hosted_invoice_url = serializers.SerializerMethodField()

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "status",
            "amount_due",
            "amount_paid",
            "currency",
            "created_at",
            "hosted_invoice_url",
        ]

    def get_hosted_invoice_url(self, invoice: Invoice) -> str | None:
        return invoice.hosted_invoice_url or None


# The contract's payment statuses: a succeeded payment shows its refunds (the row keeps `succeeded` and
# `refunded_amount`, which the refund cap checks).
PAYMENT_STATUSES = ["pending", "succeeded", "failed", "canceled", "refunded", "partially_refunded", "disputed"]


class PaymentOutput(serializers.ModelSerializer[Payment]):
    status = serializers.SerializerMethodField()

    class Meta:
        model = Payment
        fields = ["id", "amount", "currency", "status", "created_at", "refunded_amount"]

    @extend_schema_field(serializers.ChoiceField(choices=PAYMENT_STATUSES))
    def get_status(self, payment: Payment) -> str:
        if payment.status == Payment.Status.SUCCEEDED and payment.refunded_amount > 0:
            return "refunded" if payment.refunded_amount >= payment.amount else "partially_refunded"
        return str(payment.status)


class BillingPortalInput(StrictInput):
    return_url = ReturnURLField()  # on CHECKOUT_RETURN_URL_ORIGINS


class BillingPortalOutput(serializers.Serializer[Any]):
    url = serializers.URLField()


class ChangePreviewQuery(serializers.Serializer[Any]):
    price_id = serializers.UUIDField()


class ChangePreviewLineOutput(serializers.Serializer[Any]):
    description = serializers.CharField()
    amount = serializers.IntegerField()


class ChangePreviewOutput(serializers.Serializer[Any]):
    amount_due = serializers.IntegerField(
        help_text="An upgrade: charged now (the proration). A downgrade: nothing now; the first invoice at the new "
        "price, due at effective_at"
    )
    currency = serializers.CharField()
    proration_date = serializers.IntegerField(help_text="Send it back with the change to be charged this amount")
    lines = ChangePreviewLineOutput(many=True)
    kind = serializers.ChoiceField(choices=["upgrade", "downgrade"])
    effective_at = serializers.DateTimeField(allow_null=True, help_text="When the new plan takes effect")


class ChangeInput(StrictInput):
    price_id = StrictUUIDField()
    proration_date = serializers.IntegerField(required=False, min_value=0, max_value=2**40)
