"""Customers, checkout orders and subscriptions: read-only, searchable, filtered by date range."""

from django.contrib import admin

from billing.admin.common import ReadOnlyAdmin, amount_only, date_range, money
from billing.models import Customer, Order, Subscription


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = ("email", "user_id", "stripe_customer_id", "created_at", "stripe_deleted_at")
    search_fields = ("email", "=stripe_customer_id", "user_id__exact", "id__exact")
    list_filter = (date_range("created_at"),)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    stripe_id_fields = ("stripe_customer_id",)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "customer", "plan_code", "total", "status", "created_at")
    list_select_related = ("customer", "price__plan")
    list_filter = ("status", date_range("created_at"))
    date_hierarchy = "created_at"
    search_fields = ("id__exact", "=stripe_session_id", "customer__email", "customer__user_id__exact")
    ordering = ("-created_at",)
    stripe_id_fields = ("stripe_session_id", "stripe_subscription_id", "stripe_payment_intent_id")

    @admin.display(description="plan")
    def plan_code(self, order: Order) -> str:
        return order.price.plan.code

    @admin.display(description="amount", ordering="amount")
    def total(self, order: Order) -> str:
        return money(order.amount, order.currency)


def _price_amount(subscription: Subscription) -> str:
    price = subscription.price
    return amount_only(price.unit_amount, price.currency) if price else ""


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
    list_filter = ("status", "plan", "cancel_at_period_end", date_range("created_at"))
    date_hierarchy = "created_at"
    search_fields = (
        "=stripe_subscription_id",
        "customer__email",
        "customer__user_id__exact",
        "=customer__stripe_customer_id",
    )
    ordering = ("-created_at",)
    actions = ("export_csv",)
    stripe_id_fields = ("stripe_subscription_id",)
    csv_name = "subscriptions"
    csv_select_related = ("customer", "plan", "price")
    csv_columns = (
        ("subscription_id", lambda s: s.id),
        ("created_at", lambda s: s.created_at),
        ("user_id", lambda s: s.customer.user_id),
        ("email", lambda s: s.customer.email),
        ("plan", lambda s: s.plan.code),
        ("status", lambda s: s.status),
        ("price", _price_amount),
        ("currency", lambda s: s.price.currency.upper() if s.price else ""),
        ("interval", lambda s: s.price.interval if s.price else ""),
        ("current_period_start", lambda s: s.current_period_start),
        ("current_period_end", lambda s: s.current_period_end),
        ("cancel_at_period_end", lambda s: s.cancel_at_period_end),
        ("canceled_at", lambda s: s.canceled_at),
        ("stripe_subscription_id", lambda s: s.stripe_subscription_id),
        ("stripe_customer_id", lambda s: s.customer.stripe_customer_id),
    )
