"""Plan changes: what a change costs (Stripe's invoice preview), and the change itself, one per
(customer, Idempotency-Key) like a checkout order.

- An upgrade (a price at least as high per month) switches the price now and invoices the proration at
  once, with the proration date the preview showed: the price shown is the price charged. Entitlements
  follow at once (`billing.signals`, in the same transaction).
- A downgrade keeps the paid-for plan to the end of the period: a Stripe subscription schedule switches
  the price then. Our subscription row and the entitlements follow when Stripe switches
  (`customer.subscription.updated`, `subscription_upsert_from_stripe`), not on the request.

Stripe is called between durable transactions: the change is committed `pending` first, its outcome after.
Concurrent requests with one key find one change: only the holder of its lease calls Stripe, the others wait
for its outcome (`_leases`); every Stripe write carries a key derived from the change's id, so a holder that
died and the request taking over make Stripe act once. One change may be scheduled at a time.
"""

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from billing import gateway
from billing import stripe_objects as so
from billing.errors import (
    CardDeclined,
    IdempotencyKeyReused,
    StripeNotConfigured,
    StripeRateLimited,
    StripeRequestFailed,
    StripeUnavailable,
    SubscriptionNotChangeable,
)
from billing.models import Price, Subscription, SubscriptionChange
from billing.services._leases import Lease, lease_expiry
from billing.services._shared import audit_record, create_or_lock, update_fields
from billing.services.subscriptions import subscription_event_data, subscription_get_owned
from billing.signals import billing_changed_by_client
from gdpr import audit
from payments_project.errors import ApplicationError, ValidationFailed
from tasks.outbox import emit

CHANGE_LEASE = Lease(SubscriptionChange, in_flight=SubscriptionChange.Status.PENDING, what="plan change")
_MONTHS = {Price.Interval.MONTH: 1, Price.Interval.YEAR: 12}
_RETRYABLE_FAILURES = {StripeUnavailable.code, StripeRateLimited.code, StripeNotConfigured.code}
_REPLAYED_FAILURES: dict[str, type[ApplicationError]] = {
    CardDeclined.code: CardDeclined,
    StripeRequestFailed.code: StripeRequestFailed,
}
PRORATION_DATE_SKEW = timedelta(minutes=5)  # a client clock, or the preview's own time, slightly ahead


def _per_month(price: Price) -> Fraction:
    return Fraction(price.unit_amount, _MONTHS[Price.Interval(price.interval)])


def _price_error(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"field": "price_id", "message": message}])


def _plan_change(
    *, user_id: uuid.UUID, subscription_id: uuid.UUID, price_id: uuid.UUID
) -> tuple[Subscription, Price, str]:
    """The caller's subscription, the price it would change to, and whether that is an up- or a downgrade;
    a 404, 400 or 409 problem (before anything is written or sent) when the change cannot be made."""
    subscription = subscription_get_owned(user_id=user_id, subscription_id=subscription_id)
    if subscription.status not in (Subscription.Status.ACTIVE, Subscription.Status.TRIALING):
        raise SubscriptionNotChangeable(f"A {subscription.status} subscription cannot change plan")
    if subscription.cancel_at_period_end:
        raise SubscriptionNotChangeable("The subscription is set to cancel at period end: resume it first")
    current = subscription.price
    if current is None or current.interval not in _MONTHS:
        raise SubscriptionNotChangeable("The subscription's current price is not one we can change from")
    price = Price.objects.select_related("plan").filter(pk=price_id, active=True, plan__active=True).first()
    if price is None:
        raise _price_error("No active price has this id")
    if price.interval not in _MONTHS:
        raise _price_error("A subscription can only change to a monthly or yearly price")
    if price.pk == current.pk:
        raise _price_error("The subscription is already on this price")
    if price.currency != current.currency:
        raise _price_error(f"The subscription is billed in {current.currency}; choose a {current.currency} price")
    if subscription.changes.filter(status=SubscriptionChange.Status.SCHEDULED).exists():
        raise SubscriptionNotChangeable("A plan change is already scheduled for the end of this period")
    kind = (
        SubscriptionChange.Kind.UPGRADE
        if _per_month(price) >= _per_month(current)
        else SubscriptionChange.Kind.DOWNGRADE
    )
    return subscription, price, kind


def _stripe_item(subscription: Subscription) -> tuple[so.StripeObject, str]:
    """Stripe's current subscription and the id of its one item."""
    stripe_subscription = gateway.subscription_retrieve(subscription.stripe_subscription_id)
    item_id = so.stripe_id(so.subscription_item(stripe_subscription).get("id"))
    if not item_id:
        raise StripeRequestFailed("Stripe answered with a subscription without items")
    return stripe_subscription, item_id


# --- the preview ---------------------------------------------------------------------------------


def subscription_change_preview(
    *, user_id: uuid.UUID, subscription_id: uuid.UUID, price_id: uuid.UUID
) -> dict[str, Any]:
    """What the change costs: for an upgrade, the proration invoiced now (pass `proration_date` back to the
    change to be charged exactly this); for a downgrade nothing now, and this is the first invoice at the new
    price, at `effective_at` (the period end)."""
    if not gateway.is_configured():
        raise StripeNotConfigured()
    subscription, price, kind = _plan_change(user_id=user_id, subscription_id=subscription_id, price_id=price_id)
    stripe_subscription, item_id = _stripe_item(subscription)
    proration_date = int(time.time())
    upgrade = kind == SubscriptionChange.Kind.UPGRADE
    invoice = gateway.invoice_preview_change(
        stripe_customer_id=so.stripe_id(stripe_subscription.get("customer"))
        or subscription.customer.stripe_customer_id
        or "",
        stripe_subscription_id=subscription.stripe_subscription_id,
        item_id=item_id,
        stripe_price_id=price.stripe_price_id,
        proration_date=proration_date,
        proration_behavior="always_invoice" if upgrade else "none",
    )
    lines = invoice.get("lines")
    data = lines.get("data") if isinstance(lines, dict) else None
    return {
        "amount_due": so.amount(invoice, "amount_due"),
        "currency": so.currency(invoice) if invoice.get("currency") else price.currency,
        "proration_date": proration_date,
        "lines": [
            {"description": str(line.get("description") or price.plan.name), "amount": int(line.get("amount") or 0)}
            for line in (data if isinstance(data, list) else [])
            if isinstance(line, dict)
        ],
        "kind": str(kind),
        "effective_at": timezone.now() if upgrade else subscription.current_period_end,
    }


# --- the change ----------------------------------------------------------------------------------


def change_fingerprint(*, subscription_id: uuid.UUID, price_id: uuid.UUID, proration_date: int | None) -> str:
    """What 'the same request' means for an Idempotency-Key: the subscription and the canonical body."""
    body = {"subscription_id": str(subscription_id), "price_id": str(price_id), "proration_date": proration_date}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def subscription_change(
    *,
    user_id: uuid.UUID,
    subscription_id: uuid.UUID,
    price_id: uuid.UUID,
    proration_date: int | None,
    idempotency_key: str,
    request: HttpRequest | None = None,
) -> tuple[Subscription, bool]:
    """Change (or replay the change of) the subscription's price; returns (the subscription, created).

    The same key and body again returns the subscription as that change left it; the key with another body
    is a 422. Nothing is written before the change is known to be possible (404, 400, 409 first)."""
    if not gateway.is_configured():
        raise StripeNotConfigured()
    fingerprint = change_fingerprint(subscription_id=subscription_id, price_id=price_id, proration_date=proration_date)
    change = (
        SubscriptionChange.objects.select_related("customer")
        .filter(customer__user_id=user_id, idempotency_key=idempotency_key)
        .first()
    )
    if change is None:
        subscription, price, kind = _plan_change(user_id=user_id, subscription_id=subscription_id, price_id=price_id)
        when = _proration_moment(subscription, proration_date) if kind == SubscriptionChange.Kind.UPGRADE else None
        change, created, holds = _change_record_intent(
            subscription=subscription,
            price=price,
            kind=kind,
            proration_date=when,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
    else:
        change, created, holds = _change_take(change_id=change.id, fingerprint=fingerprint)
    change = CHANGE_LEASE.outcome(
        change, holds=holds, call=lambda held: _change_call_stripe(change_id=held.id, request=request)
    )
    if change.status == SubscriptionChange.Status.FAILED:
        raise _REPLAYED_FAILURES.get(change.failure_code, StripeRequestFailed)(change.failure_message or None)
    return Subscription.objects.select_related("plan").get(pk=change.subscription_id), created


def _proration_moment(subscription: Subscription, proration_date: int | None) -> datetime:
    """The preview's proration date (or now): inside the current period, and not in the future."""
    now = timezone.now()
    if proration_date is None:
        return now
    message = "proration_date must be the one change-preview returned: a time in the current period, not later than now"
    try:
        moment = datetime.fromtimestamp(proration_date, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValidationFailed(message, errors=[{"field": "proration_date", "message": message}]) from None
    start = subscription.current_period_start
    if moment > now + PRORATION_DATE_SKEW or (start is not None and moment < start) or moment < now - timedelta(days=1):
        raise ValidationFailed(message, errors=[{"field": "proration_date", "message": message}])
    return moment


@transaction.atomic(durable=True)
def _change_record_intent(
    *,
    subscription: Subscription,
    price: Price,
    kind: str,
    proration_date: datetime | None,
    idempotency_key: str,
    fingerprint: str,
) -> tuple[SubscriptionChange, bool, bool]:
    """Insert the change with a lease, or find the one a concurrent request with this key made; returns
    (change, created, holds_lease)."""
    now = timezone.now()
    change, created = create_or_lock(
        SubscriptionChange,
        {"customer": subscription.customer, "idempotency_key": idempotency_key},
        {
            "subscription": subscription,
            "from_price": subscription.price,
            "price": price,
            "kind": kind,
            "request_fingerprint": fingerprint,
            "proration_date": proration_date,
            "lease_until": lease_expiry(now),
        },
    )
    if created:
        return change, True, True
    return _change_take_locked(change, fingerprint=fingerprint, now=now)


@transaction.atomic(durable=True)
def _change_take(*, change_id: uuid.UUID, fingerprint: str) -> tuple[SubscriptionChange, bool, bool]:
    change = SubscriptionChange.objects.select_for_update().get(pk=change_id)
    return _change_take_locked(change, fingerprint=fingerprint, now=timezone.now())


def _change_take_locked(
    change: SubscriptionChange, *, fingerprint: str, now: datetime
) -> tuple[SubscriptionChange, bool, bool]:
    """The same key again: 422 with another body; else this request takes the lease when its holder died, or
    when it failed for a reason that may have passed."""
    if change.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with another request body; use a new key for a new change"
        )
    holds = CHANGE_LEASE.take(
        change,
        now=now,
        retry=change.status == SubscriptionChange.Status.FAILED and change.failure_code in _RETRYABLE_FAILURES,
        reset={"failure_code": "", "failure_message": ""},
    )
    return change, False, holds


def _change_call_stripe(*, change_id: uuid.UUID, request: HttpRequest | None) -> SubscriptionChange:
    change = SubscriptionChange.objects.select_related("subscription__customer", "price", "from_price").get(
        pk=change_id
    )
    subscription = change.subscription
    key = f"subscription-change:{change.id}"
    try:
        stripe_subscription, item_id = _stripe_item(subscription)
        if change.kind == SubscriptionChange.Kind.UPGRADE:
            proration = change.proration_date or change.created_at  # set for every upgrade
            called_at = timezone.now()
            updated = gateway.subscription_change_price_now(
                stripe_subscription_id=subscription.stripe_subscription_id,
                item_id=item_id,
                stripe_price_id=change.price.stripe_price_id,
                proration_date=int(proration.timestamp()),
                idempotency_key=key,
            )
            _change_record_applied(change_id=change.id, updated=updated, called_at=called_at, request=request)
            return SubscriptionChange.objects.get(pk=change.id)
        period_start, period_end = so.subscription_period(stripe_subscription)
        period_end = period_end or subscription.current_period_end
        if period_end is None:
            raise StripeRequestFailed("Stripe answered with a subscription without a current period")
        schedule = gateway.subscription_schedule_from(
            stripe_subscription_id=subscription.stripe_subscription_id, idempotency_key=f"{key}:schedule"
        )
        schedule_id = so.required_id(schedule, "subscription schedule")
        phases = schedule.get("phases")
        first = phases[0] if isinstance(phases, list) and phases and isinstance(phases[0], dict) else {}
        start = first.get("start_date") or int(
            (period_start or subscription.current_period_start or period_end).timestamp()
        )
        gateway.subscription_schedule_price_at(
            schedule_id=schedule_id,
            current_price_id=(change.from_price or change.price).stripe_price_id,
            phase_start=int(start),
            phase_end=int(period_end.timestamp()),
            next_price_id=change.price.stripe_price_id,
            idempotency_key=f"{key}:phases",
        )
    except ApplicationError as error:
        _change_record_failure(change_id=change.id, code=error.code, message=error.detail)
        raise
    except Exception:
        _change_record_failure(change_id=change.id, code="internal_error", message="The plan change failed")
        raise
    _change_record_scheduled(change_id=change.id, schedule_id=schedule_id, effective_at=period_end, request=request)
    return SubscriptionChange.objects.get(pk=change.id)


def _change_announce(change: SubscriptionChange, subscription: Subscription, request: HttpRequest | None) -> None:
    user_id = subscription.customer.user_id
    audit_record(
        audit.AuditAction.SUBSCRIPTION_CHANGE_REQUESTED,
        actor_type=audit.ActorType.USER,
        actor_id=str(user_id),
        target_type="subscription",
        target_id=subscription.id,
        metadata={"change_id": str(change.id), "kind": change.kind, "price_id": str(change.price_id)},
        request=request,
    )
    subscription_changed_emit(change, subscription)


def subscription_changed_emit(change: SubscriptionChange, subscription: Subscription) -> None:
    """`subscription.changed`: when a change is applied, and when a downgrade is scheduled."""
    data = subscription_event_data(subscription, subscription.customer.user_id)
    data["change"] = {
        "change_id": str(change.id),
        "kind": change.kind,
        "status": change.status,
        "from_plan": change.from_price.plan.code if change.from_price else None,
        "to_plan": change.price.plan.code,
        "price_id": str(change.price_id),
        "effective_at": change.effective_at,
    }
    emit("subscription.changed", f"subscription:{subscription.id}", data)


@transaction.atomic(durable=True)
def _change_record_applied(
    *, change_id: uuid.UUID, updated: so.StripeObject, called_at: datetime, request: HttpRequest | None
) -> None:
    change = (
        SubscriptionChange.objects.select_for_update(of=("self",))
        .select_related("price__plan", "from_price__plan")
        .get(pk=change_id)
    )
    subscription = (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("customer", "plan")
        .get(pk=change.subscription_id)
    )
    if change.status != SubscriptionChange.Status.PENDING:
        return
    now = timezone.now()
    # Stripe's answer is the subscription's new state (a new interval moves the period). Its version is when we
    # called: Stripe's own events for this change (created that second or later) still apply, older ones not.
    values: dict[str, Any] = {"price": change.price, "plan": change.price.plan}
    period_start, period_end = so.subscription_period(updated)
    if period_start and period_end:
        values.update(current_period_start=period_start, current_period_end=period_end)
    if updated.get("status") in Subscription.Status.values:
        values["status"] = updated["status"]
    values["stripe_updated_at"] = max(subscription.stripe_updated_at, called_at.replace(microsecond=0))
    update_fields(subscription, values)
    update_fields(change, {"status": SubscriptionChange.Status.APPLIED, "effective_at": now, "lease_until": None})
    _change_announce(change, subscription, request)
    billing_changed_by_client.send(Subscription, user_ids={subscription.customer.user_id})  # entitlements follow now


@transaction.atomic(durable=True)
def _change_record_scheduled(
    *, change_id: uuid.UUID, schedule_id: str, effective_at: datetime, request: HttpRequest | None
) -> None:
    change = (
        SubscriptionChange.objects.select_for_update(of=("self",))
        .select_related("price__plan", "from_price__plan")
        .get(pk=change_id)
    )
    subscription = Subscription.objects.select_related("customer", "plan").get(pk=change.subscription_id)
    if change.status != SubscriptionChange.Status.PENDING:
        return
    update_fields(
        change,
        {
            "status": SubscriptionChange.Status.SCHEDULED,
            "stripe_schedule_id": schedule_id,
            "effective_at": effective_at,
        },
    )
    _change_announce(change, subscription, request)


@transaction.atomic(durable=True)
def _change_record_failure(*, change_id: uuid.UUID, code: str, message: str) -> None:
    change = SubscriptionChange.objects.select_for_update(of=("self",)).get(pk=change_id)
    if change.status == SubscriptionChange.Status.PENDING:
        update_fields(
            change,
            {
                "status": SubscriptionChange.Status.FAILED,
                "failure_code": code,
                "failure_message": message,
                "lease_until": None,
            },
        )


def scheduled_changes_apply(subscription: Subscription) -> None:
    """In the webhook's transaction, once Stripe switched the subscription's price: the downgrade scheduled to
    that price is applied (and announced)."""
    for change in (
        SubscriptionChange.objects.select_for_update(of=("self",))
        .select_related("price__plan", "from_price__plan")
        .filter(subscription=subscription, status=SubscriptionChange.Status.SCHEDULED, price=subscription.price)
    ):
        update_fields(change, {"status": SubscriptionChange.Status.APPLIED})
        subscription_changed_emit(change, subscription)
