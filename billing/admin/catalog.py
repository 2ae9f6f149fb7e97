"""The catalog: loaded with `manage.py import_catalog`; only superusers edit it here."""

from django.contrib import admin
from django.utils.safestring import SafeString

from billing.admin.common import VIEWERS, money
from billing.models import Feature, Plan, Price
from billing.stripe_dashboard import stripe_links
from payments_project.roles import RoleRestrictedAdmin


@admin.register(Feature)
class FeatureAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = VIEWERS
    list_display = ("key", "name")
    search_fields = ("key", "name")


class PriceInline(RoleRestrictedAdmin, admin.TabularInline):
    model = Price
    view_roles = VIEWERS
    extra = 0
    fields = ("stripe_price_id", "amount", "interval", "active", "open_in_stripe")
    readonly_fields = ("amount", "open_in_stripe")

    @admin.display(description="amount")
    def amount(self, price: Price) -> str:
        return money(price.unit_amount, price.currency)

    @admin.display(description="Stripe")
    def open_in_stripe(self, price: Price) -> SafeString:
        return stripe_links(price.stripe_price_id)


@admin.register(Plan)
class PlanAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
    view_roles = VIEWERS
    list_display = ("code", "name", "family_seats", "active")
    list_filter = ("active",)
    search_fields = ("code", "name")
    filter_horizontal = ("features",)
    inlines = (PriceInline,)
