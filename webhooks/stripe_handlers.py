"""Stripe event types → billing services. Registered when the webhooks app is ready.

Each billing service takes the event's object and the event's time, ignores a version older than the
one it already applied (out-of-order delivery), and returns the users whose billing state changed.
"""

import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from django.utils import timezone

from billing import gateway
from billing import services as billing
from billing.models import Subscription
from webhooks.handlers import Refetched, handles


@handles("checkout.session.completed")
def checkout_session_completed(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.order_complete_from_stripe(session=obj, event_created=created)


@handles("checkout.session.async_payment_succeeded")
def checkout_session_async_payment_succeeded(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.order_complete_from_stripe(session=obj, event_created=created, async_payment=True)


@handles("checkout.session.async_payment_failed")
def checkout_session_async_payment_failed(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.order_fail_from_stripe(session=obj, event_created=created)


@handles("checkout.session.expired")
def checkout_session_expired(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.order_expire_from_stripe(session=obj, event_created=created)


def subscription_refetch(versions: Sequence[tuple[Mapping[str, Any], datetime]]) -> list[Refetched]:
    """Stripe's `created` has one-second resolution: two different versions of a subscription in the
    same second cannot be ordered from their events, so ask Stripe for the current one."""
    ids = {str(obj["id"]) for obj, _ in versions if obj.get("id")}
    applied = {
        row[0]: row[1:]
        for row in Subscription.objects.filter(stripe_subscription_id__in=ids).values_list(
            "stripe_subscription_id", "stripe_updated_at", "status", "cancel_at_period_end"
        )
    }
    refetched: list[Refetched] = []
    for obj, created in versions:
        state = applied.get(str(obj.get("id")))
        if state is None or state[0] != created:
            refetched.append(None)  # the event's time decides
        elif state[1:] == (obj.get("status"), bool(obj.get("cancel_at_period_end"))):
            refetched.append(None)  # the same version again (a replay or a duplicate)
        else:
            try:
                fetched_at = timezone.now()
                refetched.append((gateway.subscription_retrieve(str(obj["id"])), fetched_at))
            except Exception as exc:  # this event's failure, recorded with it
                refetched.append(exc)
    return refetched


def subscriptions_lock_ahead(objects: Sequence[Mapping[str, Any]]) -> AbstractContextManager[None]:
    return billing.subscriptions_locked_ahead(stripe_subscriptions=objects)


@handles(
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    refetch=subscription_refetch,
    lock_ahead=subscriptions_lock_ahead,
)
def subscription_changed(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.subscription_upsert_from_stripe(stripe_subscription=obj, event_created=created)


@handles("customer.subscription.trial_will_end")
def subscription_trial_will_end(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.subscription_trial_will_end_from_stripe(stripe_subscription=obj, event_created=created)


@handles("invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed")
def invoice_paid_or_failed(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    changed = billing.invoice_upsert_from_stripe(invoice=obj, event_created=created)
    return changed | billing.payment_record_from_invoice(invoice=obj, event_created=created)


@handles(
    "invoice.created",
    "invoice.finalized",
    "invoice.updated",
    "invoice.voided",
    "invoice.marked_uncollectible",
)
def invoice_changed(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.invoice_upsert_from_stripe(invoice=obj, event_created=created)


@handles("invoice.payment_action_required")
def invoice_payment_action_required(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.invoice_upsert_from_stripe(invoice=obj, event_created=created, action_required=True)


@handles("payment_intent.succeeded", "payment_intent.payment_failed")
def payment_intent_settled(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.payment_record_from_intent(payment_intent=obj, event_created=created)


@handles("charge.refunded")
def charge_refunded(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.refund_record_from_charge(charge=obj, event_created=created)


@handles("charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed")
def charge_disputed(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.dispute_record_from_stripe(dispute=obj, event_created=created)


@handles("customer.created", "customer.updated")
def customer_changed(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.customer_upsert_from_stripe(stripe_customer=obj, event_created=created)


@handles("customer.deleted")
def customer_deleted(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
    return billing.customer_delete_from_stripe(stripe_customer=obj, event_created=created)
