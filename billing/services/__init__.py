"""Billing's writes, by use case; import them from here.

- `checkout`, `subscriptions`, `refunds`: API and admin actions. They talk to Stripe, so they are never
  one transaction: each writes its intent and commits, calls Stripe through the gateway, then writes
  the outcome, each write a durable transaction with its audit and outbox rows. Call them outside any
  transaction. Orders and refunds are leased to one request while it calls Stripe (`_leases`).
- `from_stripe`, `invoices`: what webhooks and reconciliation apply from Stripe objects, inside the caller's
  transaction, ignoring stale versions.

Lock order, everywhere: customer, then order or subscription, then payment, then refund.
"""

from billing.services.changes import subscription_change, subscription_change_preview
from billing.services.checkout import (
    CheckoutResult,
    checkout_fingerprint,
    order_start_checkout,
    orders_resolve_abandoned,
)
from billing.services.from_stripe import (
    customer_delete_from_stripe,
    customer_upsert_from_stripe,
    dispute_record_from_stripe,
    order_complete_from_stripe,
    order_expire_from_stripe,
    order_fail_from_stripe,
    payment_record_from_intent,
    payment_record_from_invoice,
    refund_record_from_charge,
    subscription_trial_will_end_from_stripe,
    subscription_upsert_from_stripe,
    subscriptions_locked_ahead,
)
from billing.services.invoices import invoice_upsert_from_stripe
from billing.services.portal import billing_portal_session_create
from billing.services.refunds import refund_issue, refunds_resolve_stuck
from billing.services.subscriptions import subscription_cancel, subscription_resume

__all__ = [
    "CheckoutResult",
    "billing_portal_session_create",
    "checkout_fingerprint",
    "customer_delete_from_stripe",
    "customer_upsert_from_stripe",
    "dispute_record_from_stripe",
    "invoice_upsert_from_stripe",
    "order_complete_from_stripe",
    "order_expire_from_stripe",
    "order_fail_from_stripe",
    "order_start_checkout",
    "orders_resolve_abandoned",
    "payment_record_from_intent",
    "payment_record_from_invoice",
    "refund_issue",
    "refund_record_from_charge",
    "refunds_resolve_stuck",
    "subscription_cancel",
    "subscription_change",
    "subscription_change_preview",
    "subscription_resume",
    "subscription_trial_will_end_from_stripe",
    "subscription_upsert_from_stripe",
    "subscriptions_locked_ahead",
]
