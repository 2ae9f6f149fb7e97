"""Refunds: finance refunds a payment through Stripe, and a refund row follows Stripe's refund.

`refund_apply_stripe` is where both our own call's answer and the charge.refunded webhook land.
"""

import contextlib
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone

from billing import gateway
from billing import stripe_objects as so
from billing.errors import (
    CardDeclined,
    PaymentNotRefundable,
    RefundExceedsPayment,
    StripeObjectInvalid,
    StripeRequestFailed,
    StripeTimedOut,
)
from billing.models import Payment, Refund
from billing.selectors import payment_refundable_amount
from billing.services._leases import Lease, lease_expiry
from billing.services._shared import apply_stripe_version, audit_record, update_fields
from gdpr import audit
from payments_project.errors import ApplicationError, NotFound, ValidationFailed
from tasks.outbox import emit

REFUND_LEASE = Lease(Refund, in_flight=Refund.Status.REQUESTED, what="refund", related=("payment",))


def refund_issue(
    *,
    payment_id: uuid.UUID,
    amount: int | None,
    reason: str,
    requested_by: str,
    idempotency_key: str,
    note: str = "",
    request: HttpRequest | None = None,
) -> Refund:
    """Refund all (amount=None) or part of a payment through Stripe. Idempotent per key.

    The refund is reserved against the payment under a row lock before Stripe is called, so two
    refunds racing can never together exceed what is left; the refund id is Stripe's idempotency key.
    """
    if reason not in Refund.Reason.values:
        raise ValidationFailed("Unknown refund reason", errors=[{"field": "reason", "message": "Unknown reason"}])
    if amount is not None and amount <= 0:
        raise ValidationFailed("A refund amount is positive", errors=[{"field": "amount", "message": "Must be > 0"}])
    refund, holds_lease = _refund_reserve(
        payment_id=payment_id,
        amount=amount,
        reason=reason,
        note=note,
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        request=request,
    )
    return REFUND_LEASE.outcome(
        refund, holds=holds_lease, call=lambda held: _refund_call_stripe(refund=held, request=request)
    )


def refunds_resolve_stuck(*, limit: int = 100, refund_ids: list[uuid.UUID] | None = None) -> int:
    """Settle refunds left `requested`: Stripe was down (or the request died) after the amount was reserved.

    Once a refund's lease has run out, Stripe is asked again with the refund's own idempotency key (its
    id), so Stripe refunds at most once however often this runs: the refund ends succeeded or pending
    with Stripe's id, or failed with its amount released. One still unreachable stays `requested` for the
    next run. `refund_ids` limits it to those refunds (finance's admin action). Returns how many it settled.
    """
    stuck = Refund.objects.filter(status=Refund.Status.REQUESTED, lease_until__lt=timezone.now())
    if refund_ids is not None:
        stuck = stuck.filter(pk__in=refund_ids)
    settled = 0
    for refund_id in stuck.order_by("created_at").values_list("id", flat=True)[:limit]:
        refund = _refund_take_over_stuck(refund_id=refund_id)
        if refund is None:
            continue  # its form was submitted again, or another sweeper took it first
        with contextlib.suppress(ApplicationError):  # still down: stays requested; refused: recorded as failed
            _refund_call_stripe(refund=refund, request=None)
        settled += Refund.objects.filter(pk=refund_id).exclude(status=Refund.Status.REQUESTED).exists()
    return settled


@transaction.atomic(durable=True)
def _refund_take_over_stuck(*, refund_id: uuid.UUID) -> Refund | None:
    refund = Refund.objects.select_for_update(of=("self",)).select_related("payment").get(pk=refund_id)
    return refund if REFUND_LEASE.take(refund, now=timezone.now()) else None


@transaction.atomic(durable=True)
def _refund_reserve(
    *,
    payment_id: uuid.UUID,
    amount: int | None,
    reason: str,
    note: str,
    requested_by: str,
    idempotency_key: str,
    request: HttpRequest | None,
) -> tuple[Refund, bool]:
    """Reserve the refund against the payment, or find the one this key made; returns (refund, holds_lease)."""
    # The payment row lock serialises every refund of this payment: the cap check and the
    # reservation happen as one step.
    payment = Payment.objects.select_for_update().filter(pk=payment_id).first()
    if payment is None:
        raise NotFound("No such payment")
    now = timezone.now()
    existing = Refund.objects.filter(payment=payment, idempotency_key=idempotency_key).first()
    if existing is not None:
        # Its caller died mid-call: this request replays it with the same Stripe key.
        return existing, REFUND_LEASE.take(existing, now=now)
    if payment.status != Payment.Status.SUCCEEDED:
        raise PaymentNotRefundable(f"Only a succeeded payment can be refunded; this one is {payment.status}")
    left = payment_refundable_amount(payment)
    wanted = left if amount is None else amount
    if wanted <= 0 or wanted > left:
        raise RefundExceedsPayment(
            f"Only {left} {payment.currency.upper()} minor units are left to refund on this payment, not {wanted}"
        )
    refund = Refund.objects.create(
        payment=payment,
        amount=wanted,
        currency=payment.currency,
        reason=reason,
        note=note,
        status=Refund.Status.REQUESTED,
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        lease_until=lease_expiry(now),
    )
    _refund_audit(
        refund,
        audit.AuditAction.REFUND_REQUESTED,
        {"payment_id": str(payment.id), "amount": wanted, "currency": payment.currency, "reason": reason},
        request,
    )
    return refund, True


def _refund_audit(
    refund: Refund, action: audit.AuditAction, metadata: dict[str, Any], request: HttpRequest | None
) -> None:
    """What finance did to a refund (the staff member who asked for it is the actor)."""
    audit_record(
        action,
        actor_type=audit.ActorType.STAFF,
        actor_id=refund.requested_by,
        target_type="refund",
        target_id=refund.id,
        metadata=metadata,
        request=request,
    )


def _refund_call_stripe(*, refund: Refund, request: HttpRequest | None) -> Refund:
    payment = refund.payment
    try:
        stripe_refund = gateway.refund_create(
            refund_id=str(refund.id),
            payment_id=str(payment.id),
            amount=refund.amount,
            reason=refund.reason,
            stripe_payment_intent_id=payment.stripe_payment_intent_id,
            stripe_charge_id=payment.stripe_charge_id,
        )
    except (StripeRequestFailed, CardDeclined) as error:
        # Stripe said no for good: release the reservation and say why.
        _refund_record_outcome(refund_id=refund.id, stripe_refund=None, failure=error.detail, request=request)
        raise
    except StripeTimedOut:
        # The request's Stripe budget ran out: nobody is asking any more, so a replay or the sweep
        # (refunds_resolve_stuck) may ask again with the refund's key at once, not after the lease.
        Refund.objects.filter(pk=refund.id, status=Refund.Status.REQUESTED).update(lease_until=timezone.now())
        raise
    # Any other failure (Stripe down, a timeout) leaves the refund reserved: Stripe may have done it,
    # and only a replay with the same key (or the charge.refunded webhook) can tell.
    return _refund_record_outcome(refund_id=refund.id, stripe_refund=stripe_refund, failure="", request=request)


@transaction.atomic(durable=True)
def _refund_record_outcome(
    *,
    refund_id: uuid.UUID,
    stripe_refund: so.StripeObject | None,
    failure: str,
    request: HttpRequest | None,
) -> Refund:
    payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
    payment = Payment.objects.select_for_update().select_related("customer").get(pk=payment_id)
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    refund.payment = payment
    if stripe_refund is not None:
        refund_apply_stripe(refund=refund, payment=payment, stripe_refund=stripe_refund, event_created=None)
    elif refund.status == Refund.Status.REQUESTED:
        update_fields(refund, {"status": Refund.Status.FAILED, "failure_reason": failure, "lease_until": None})
        _refund_audit(
            refund, audit.AuditAction.REFUND_FAILED, {"payment_id": str(payment.id), "reason": failure[:200]}, request
        )
    return refund


def refund_apply_stripe(
    *, refund: Refund, payment: Payment, stripe_refund: so.StripeObject, event_created: datetime | None
) -> bool:
    """Bring our refund row to Stripe's refund; announce refund.succeeded once. Returns whether it changed."""
    was = refund.status
    values: dict[str, Any] = {
        "stripe_refund_id": so.required_id(stripe_refund, "refund"),
        "status": so.refund_status(stripe_refund),
        "lease_until": None,
    }
    if values["status"] in (Refund.Status.FAILED, Refund.Status.CANCELED):
        values["failure_reason"] = str(stripe_refund.get("failure_reason") or values["status"])
    if not apply_stripe_version(refund, values, event_created=event_created):
        return False
    payment_refresh_refunded(payment)
    if refund.status == Refund.Status.SUCCEEDED and was != Refund.Status.SUCCEEDED:
        refund_succeeded(refund=refund, payment=payment)
    return True


def refund_succeeded(*, refund: Refund, payment: Payment) -> None:
    """Audit and announce a refund that Stripe completed."""
    audit_record(
        audit.AuditAction.REFUND_SUCCEEDED,
        target_type="refund",
        target_id=refund.id,
        metadata={"payment_id": str(payment.id), "amount": refund.amount, "currency": refund.currency},
    )
    emit(
        "refund.succeeded",
        f"refund:{refund.id}",
        {
            "refund_id": str(refund.id),
            "payment_id": str(payment.id),
            "user_id": str(payment.customer.user_id),
            "amount": refund.amount,
            "currency": refund.currency,
            "payment_refunded_amount": payment.refunded_amount,
        },
    )


def payment_refresh_refunded(payment: Payment, *, stripe_total: int = 0) -> bool:
    """refunded_amount only grows: Stripe's total from a charge, or our settled rows if they know more."""
    settled = (
        payment.refunds.filter(status__in=(Refund.Status.SUCCEEDED, Refund.Status.PENDING)).aggregate(
            total=Sum("amount")
        )["total"]
        or 0
    )
    total = max(payment.refunded_amount, settled, stripe_total)
    if total > payment.amount:
        raise StripeObjectInvalid(f"refunds of {total} exceed the payment's {payment.amount}")
    return bool(update_fields(payment, {"refunded_amount": total}))
