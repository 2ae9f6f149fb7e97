"""The client API's shapes (API.md): what goes in, what comes out."""

from typing import Any

from rest_framework import serializers

from billing.models import Order, Payment, Plan, Price, Subscription
from payments_project.return_urls import ReturnURLField


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


class CheckoutInput(serializers.Serializer[Any]):
    price_id = serializers.UUIDField()
    success_url = ReturnURLField()
    cancel_url = ReturnURLField()


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

    def get_checkout_url(self, order: Order) -> str | None:
        # A URL the client may still open; a completed, expired or failed order has none.
        return order.checkout_url if order.status == Order.Status.OPEN and order.checkout_url else None


class SubscriptionOutput(serializers.ModelSerializer[Subscription]):
    plan: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Subscription
        fields = ["id", "plan", "status", "current_period_end", "cancel_at_period_end"]


class PaymentOutput(serializers.ModelSerializer[Payment]):
    class Meta:
        model = Payment
        fields = ["id", "amount", "currency", "status", "created_at", "refunded_amount"]
