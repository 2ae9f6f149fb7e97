"""Invoices applied from Stripe's `invoice.*` events (inside the webhook processor's transaction, not durable).

An invoice is stored for every event about it, whatever its type, so the client's list follows Stripe's
lifecycle (draft → open → paid | uncollectible | void). `invoice.payment_action_required` additionally
marks it as waiting for the customer (3-D Secure): the subscription shows `requires_action` with the
invoice's hosted URL until the invoice leaves `open`, and `subscription.payment_action_required` is
emitted so a notifier can send the customer that URL.
"""

import uuid
from datetime import datetime
from typing import Any

from django.db import transaction

from billing import stripe_objects as so
from billing.models import Invoice, Subscription
from billing.services._shared import apply_stripe_version, create_or_lock, customer_for_stripe
from billing.services.subscriptions import subscription_event_data
from tasks.errors import NotYetKnown
from tasks.outbox import emit

# How far along its lifecycle an invoice is: draft → open → uncollectible → paid | void.
_STAGE = {
    Invoice.Status.DRAFT: 0,
    Invoice.Status.OPEN: 1,
    Invoice.Status.UNCOLLECTIBLE: 2,
    Invoice.Status.PAID: 3,
    Invoice.Status.VOID: 3,
}


@transaction.atomic
def invoice_upsert_from_stripe(
    *, invoice: so.StripeObject, event_created: datetime, action_required: bool = False
) -> set[uuid.UUID]:
    """invoice.created / finalized / updated / paid / payment_succeeded / payment_failed / voided /
    marked_uncollectible / payment_action_required: our row follows Stripe's invoice."""
    stripe_invoice_id = so.required_id(invoice, "invoice")
    status = so.invoice_status(invoice)
    subscription_id = so.invoice_subscription_id(invoice)
    subscription = (
        Subscription.objects.select_related("customer", "plan").filter(stripe_subscription_id=subscription_id).first()
        if subscription_id
        else None
    )
    customer = customer_for_stripe(invoice.get("customer"), fallback_user_id=so.metadata_uuid(invoice, "user_id"))
    if customer is None and subscription is not None:
        customer = subscription.customer
    if customer is None:
        raise NotYetKnown(f"invoice {stripe_invoice_id}'s customer is not known yet", customer_missing=True)
    if subscription_id and subscription is None:
        # Its customer.subscription.created is on its way; link the invoice when it has arrived.
        raise NotYetKnown(f"invoice {stripe_invoice_id}'s subscription is not known yet")
    hosted_invoice_url = invoice.get("hosted_invoice_url")
    values: dict[str, Any] = {
        "customer": customer,
        "subscription": subscription,
        "number": str(invoice.get("number") or "")[:64],
        "status": status,
        "amount_due": so.amount(invoice, "amount_due"),
        "amount_paid": so.amount(invoice, "amount_paid") if invoice.get("amount_paid") is not None else 0,
        "currency": so.currency(invoice),
        "hosted_invoice_url": hosted_invoice_url if isinstance(hosted_invoice_url, str) else "",
    }
    found, created = create_or_lock(
        Invoice,
        {"stripe_invoice_id": stripe_invoice_id},
        {
            **values,
            "requires_action": action_required and status == Invoice.Status.OPEN,
            "stripe_updated_at": event_created,
            "created_at": so.timestamp(invoice.get("created")) or event_created,
        },
    )
    if created:
        changed = True
    elif _STAGE[status] < _STAGE[Invoice.Status(found.status)]:
        # Stripe never moves an invoice back (a paid one does not reopen). Its events' one-second times
        # cannot order invoice.finalized and invoice.paid sent in the same second; this can.
        return set()
    else:
        was_waiting = found.requires_action
        if action_required:
            values["requires_action"] = True
        if status != Invoice.Status.OPEN:
            values["requires_action"] = False  # paid, voided or given up: nothing left to confirm
        changed = bool(apply_stripe_version(found, values, event_created=event_created))
        action_required = action_required and found.requires_action and not was_waiting
    if action_required and found.requires_action and found.subscription is not None:
        emit(
            "subscription.payment_action_required",
            f"subscription:{found.subscription.id}",
            {
                **subscription_event_data(found.subscription, customer.user_id),
                "invoice_id": str(found.id),
                "hosted_invoice_url": found.hosted_invoice_url,
            },
        )
    return {customer.user_id} if changed else set()
