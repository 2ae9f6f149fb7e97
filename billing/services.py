"""Billing's writes.

Two kinds of entry point:
- API and admin actions (`order_start_checkout`, `subscription_cancel`, `refund_issue`) talk to
  Stripe, so they are never one transaction: each writes its intent and commits, calls Stripe
  through the gateway, then writes the outcome — each write a durable transaction with its audit and
  outbox rows. They must be called outside any transaction.
- Webhook services (`*_from_stripe`, `payment_record_from_*`, `refund_record_from_charge`) take a
  Stripe object and the event's creation time, run inside the webhook processor's transaction
  (non-durable), are idempotent, ignore stale versions and return the ids of the users whose
  billing state changed.

Lock order, everywhere: customer, then order or subscription, then payment, then refund.
"""

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone

from billing import gateway
from billing import stripe_objects as so
from billing.errors import (
    CardDeclined,
    IdempotencyKeyReused,
    PaymentNotRefundable,
    RefundExceedsPayment,
    RequestInProgress,
    StripeNotConfigured,
    StripeObjectInvalid,
    StripeRateLimited,
    StripeRequestFailed,
    StripeUnavailable,
    SubscriptionNotCancelable,
)
from billing.models import Customer, Order, Payment, Price, Refund, Subscription
from gdpr import audit
from payments_project.errors import ApplicationError, NotFound, ValidationFailed
from tasks.errors import TransientError
from tasks.outbox import emit

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=models.Model)

# A failure that a later attempt may not meet: a replay with the same key tries Stripe again.
_RETRYABLE_FAILURES = {StripeUnavailable.code, StripeRateLimited.code, StripeNotConfigured.code}
_REPLAYED_FAILURES: dict[str, type[ApplicationError]] = {
    CardDeclined.code: CardDeclined,
    StripeRequestFailed.code: StripeRequestFailed,
}
STRIPE_ACTOR = "stripe"


# --- small helpers -------------------------------------------------------------------------------


def _lease_seconds() -> float:
    """Long enough for the slowest Stripe exchange a holder can make (two calls, every retry)."""
    per_call = (settings.STRIPE_CONNECT_TIMEOUT_SECONDS + settings.STRIPE_READ_TIMEOUT_SECONDS) * (
        settings.STRIPE_MAX_NETWORK_RETRIES + 1
    )
    return 2 * per_call + 10


def _assign(obj: models.Model, values: Mapping[str, Any]) -> list[str]:
    """Set the values that differ; return the names of the fields that changed."""
    changed = []
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed.append(name)
    return changed


def _save(obj: models.Model, fields: list[str]) -> None:
    obj.updated_at = timezone.now()  # type: ignore[attr-defined]
    obj.save(update_fields=[*fields, "updated_at"])


def _is_stale(applied: datetime | None, event_created: datetime) -> bool:
    return applied is not None and event_created < applied


def _create_or_lock(model: type[M], lookup: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[M, bool]:
    """INSERT, or lock the row a concurrent writer inserted first (the unique constraint decides)."""
    try:
        with transaction.atomic():
            return model._default_manager.create(**lookup, **defaults), True
    except IntegrityError:
        return model._default_manager.select_for_update().get(**lookup), False


def _customer_get_or_create(*, user_id: uuid.UUID, email: str = "") -> Customer:
    customer, created = Customer.objects.get_or_create(user_id=user_id, defaults={"email": email})
    if not created and email and not customer.email:
        customer.email = email
        _save(customer, ["email"])
    return customer


def _customer_for_stripe(customer_ref: Any, *, fallback_user_id: uuid.UUID | None = None) -> Customer | None:
    """Our customer for a Stripe customer (id or expanded object), linking it when the Stripe
    customer — or, failing that, the object itself — names the user in metadata.user_id."""
    stripe_customer_id = so.stripe_id(customer_ref)
    if stripe_customer_id:
        found = Customer.objects.filter(stripe_customer_id=stripe_customer_id).first()
        if found is not None:
            return found
    user_id = so.metadata_uuid(so.expanded(customer_ref), "user_id") or fallback_user_id
    if user_id is None:
        return None
    customer = _customer_get_or_create(user_id=user_id)
    if stripe_customer_id and customer.stripe_customer_id is None:
        Customer.objects.filter(pk=customer.pk, stripe_customer_id__isnull=True).update(
            stripe_customer_id=stripe_customer_id, updated_at=timezone.now()
        )
        customer.refresh_from_db(fields=["stripe_customer_id"])
    return customer


def _audit(
    action: audit.AuditAction,
    *,
    target_type: str,
    target_id: Any,
    metadata: Mapping[str, Any],
    actor_type: audit.ActorType = audit.ActorType.PROVIDER,
    actor_id: str = STRIPE_ACTOR,
    request: HttpRequest | None = None,
) -> None:
    audit.record(
        action=action,
        actor_type=actor_type,
        actor_id=actor_id,
        target_type=target_type,
        target_id=str(target_id),
        metadata=metadata,
        request=request,
    )


# --- checkout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckoutResult:
    order: Order
    created: bool  # this request made the order (201), or it replays an earlier one (200)


def checkout_fingerprint(*, price_id: uuid.UUID, success_url: str, cancel_url: str) -> str:
    """What 'the same request' means for an Idempotency-Key: the canonical body."""
    body = {"price_id": str(price_id), "success_url": success_url, "cancel_url": cancel_url}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def order_start_checkout(
    *,
    user_id: uuid.UUID,
    email: str,
    price_id: uuid.UUID,
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
    request: HttpRequest | None = None,
) -> CheckoutResult:
    """Start (or replay) the checkout of one price: one order per (customer, Idempotency-Key).

    The order is committed before Stripe is called, and its outcome after: a Stripe failure marks it
    failed and raises the mapped error. Concurrent identical requests make one order and one session:
    only the holder of the order's lease calls Stripe; the others wait for its outcome.
    """
    if not gateway.is_configured():
        raise StripeNotConfigured()  # before writing anything: no order can get a session now
    price = Price.objects.select_related("plan").filter(pk=price_id, active=True, plan__active=True).first()
    if price is None:
        raise ValidationFailed(
            "No active price has this id", errors=[{"field": "price_id", "message": "No active price has this id"}]
        )
    fingerprint = checkout_fingerprint(price_id=price_id, success_url=success_url, cancel_url=cancel_url)
    order, created, holds_lease = _order_record_intent(
        user_id=user_id,
        email=email,
        price=price,
        success_url=success_url,
        cancel_url=cancel_url,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    if holds_lease:
        order = _order_call_stripe(order=order, price=price, email=email, request=request)
    elif order.status == Order.Status.PENDING:
        order = _order_wait_for_holder(order)
    if order.status == Order.Status.FAILED:
        raise _REPLAYED_FAILURES.get(order.failure_code, StripeRequestFailed)(order.failure_message or None)
    return CheckoutResult(order=order, created=created)


@transaction.atomic(durable=True)
def _order_record_intent(
    *,
    user_id: uuid.UUID,
    email: str,
    price: Price,
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
    fingerprint: str,
) -> tuple[Order, bool, bool]:
    """Insert the order with a lease, or find the one this key made; returns (order, created, holds_lease)."""
    customer = _customer_get_or_create(user_id=user_id, email=email)
    now = timezone.now()
    lease = now + timedelta(seconds=_lease_seconds())
    order, created = _create_or_lock(
        Order,
        {"customer": customer, "idempotency_key": idempotency_key},
        {
            "price": price,
            "amount": price.unit_amount,
            "currency": price.currency,
            "request_fingerprint": fingerprint,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "lease_until": lease,
        },
    )
    if created:
        return order, True, True
    if order.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with another request body; use a new key for a new checkout"
        )
    takes_over = (order.status == Order.Status.PENDING and (order.lease_until is None or order.lease_until < now)) or (
        order.status == Order.Status.FAILED and order.failure_code in _RETRYABLE_FAILURES
    )
    if takes_over:  # its holder died, or it failed for a reason that may have passed
        order.status = Order.Status.PENDING
        order.lease_until = lease
        order.failure_code = order.failure_message = ""
        _save(order, ["status", "lease_until", "failure_code", "failure_message"])
    return order, False, takes_over


def _order_call_stripe(*, order: Order, price: Price, email: str, request: HttpRequest | None) -> Order:
    try:
        stripe_customer_id = _stripe_customer_ensure(customer=order.customer, email=email)
        session = gateway.checkout_session_create(
            order_id=str(order.id),
            user_id=str(order.customer.user_id),
            stripe_customer_id=stripe_customer_id,
            stripe_price_id=price.stripe_price_id,
            recurring=price.is_recurring,
            success_url=order.success_url,
            cancel_url=order.cancel_url,
        )
        session_id, url = so.stripe_id(session.get("id")), session.get("url")
        if not session_id or not isinstance(url, str) or not url:
            raise StripeRequestFailed("Stripe answered without a checkout session id and URL")
    except ApplicationError as error:
        _order_record_failure(order_id=order.id, code=error.code, message=error.detail, request=request)
        raise
    except Exception:
        _order_record_failure(order_id=order.id, code="internal_error", message="Checkout failed", request=request)
        raise
    return _order_record_session(order_id=order.id, session_id=session_id, url=url, request=request)


def orders_resolve_abandoned(*, limit: int = 100) -> int:
    """Finish checkouts whose request died between writing the order and recording Stripe's answer.

    Such an order stays `pending` after its lease expires. Calling Stripe again with the order's
    idempotency key returns the session Stripe may already have made (or makes the one it did not),
    so every order ends `open` with a session or `failed` with a reason. Returns how many it settled.
    """
    settled = 0
    for order_id in Order.objects.filter(status=Order.Status.PENDING, lease_until__lt=timezone.now()).values_list(
        "id", flat=True
    )[:limit]:
        order = _order_take_over_abandoned(order_id=order_id)
        if order is None:
            continue  # a retry of the request, or another sweeper, took it first
        with contextlib.suppress(ApplicationError):  # a failure is recorded on the order, with its reason
            _order_call_stripe(order=order, price=order.price, email=order.customer.email, request=None)
        settled += 1
    return settled


@transaction.atomic(durable=True)
def _order_take_over_abandoned(*, order_id: uuid.UUID) -> Order | None:
    now = timezone.now()
    taken = Order.objects.filter(id=order_id, status=Order.Status.PENDING, lease_until__lt=now).update(
        lease_until=now + timedelta(seconds=_lease_seconds()), updated_at=now
    )
    return Order.objects.select_related("price", "customer").get(id=order_id) if taken else None


def _stripe_customer_ensure(*, customer: Customer, email: str) -> str:
    """The customer's Stripe id, creating the Stripe customer (metadata.user_id) the first time."""
    if customer.stripe_customer_id:
        return customer.stripe_customer_id
    created = gateway.customer_create(email=email, user_id=str(customer.user_id), customer_id=str(customer.id))
    stripe_customer_id = so.stripe_id(created.get("id"))
    if not stripe_customer_id:
        raise StripeRequestFailed("Stripe answered without a customer id")
    with transaction.atomic(durable=True):
        # The idempotency key makes a concurrent creator get the same Stripe customer; first write wins.
        Customer.objects.filter(pk=customer.pk, stripe_customer_id__isnull=True).update(
            stripe_customer_id=stripe_customer_id, updated_at=timezone.now()
        )
        customer.refresh_from_db(fields=["stripe_customer_id"])
    return customer.stripe_customer_id or stripe_customer_id


@transaction.atomic(durable=True)
def _order_record_session(*, order_id: uuid.UUID, session_id: str, url: str, request: HttpRequest | None) -> Order:
    order = Order.objects.select_for_update().select_related("customer", "price__plan").get(pk=order_id)
    values: dict[str, Any] = {"stripe_session_id": session_id, "checkout_url": url, "lease_until": None}
    if order.status == Order.Status.PENDING:  # a fast webhook may already have completed it
        values["status"] = Order.Status.OPEN
    changed = _assign(order, values)
    if changed:
        _save(order, changed)
    if "stripe_session_id" in changed:
        user_id = order.customer.user_id
        _audit(
            audit.AuditAction.ORDER_CREATED,
            actor_type=audit.ActorType.USER,
            actor_id=str(user_id),
            target_type="order",
            target_id=order.id,
            metadata={"plan": order.price.plan.code, "amount": order.amount, "currency": order.currency},
            request=request,
        )
        emit(
            "order.created",
            f"order:{order.id}",
            {
                "order_id": str(order.id),
                "user_id": str(user_id),
                "plan": order.price.plan.code,
                "price_id": str(order.price_id),
                "amount": order.amount,
                "currency": order.currency,
            },
        )
    return order


@transaction.atomic(durable=True)
def _order_record_failure(*, order_id: uuid.UUID, code: str, message: str, request: HttpRequest | None) -> None:
    order = Order.objects.select_for_update().select_related("customer").get(pk=order_id)
    if order.status != Order.Status.PENDING:
        return
    _assign(
        order, {"status": Order.Status.FAILED, "failure_code": code, "failure_message": message, "lease_until": None}
    )
    _save(order, ["status", "failure_code", "failure_message", "lease_until"])
    _audit(
        audit.AuditAction.ORDER_FAILED,
        actor_type=audit.ActorType.USER,
        actor_id=str(order.customer.user_id),
        target_type="order",
        target_id=order.id,
        metadata={"code": code},
        request=request,
    )


def _wait_for(load: Callable[[], M], done: Callable[[M], bool], *, what: str) -> M:
    """Poll a row another request is resolving until it is, or answer 409 with Retry-After."""
    deadline = time.monotonic() + settings.BILLING_IN_FLIGHT_WAIT_SECONDS
    delay = 0.02
    while True:
        row = load()
        if done(row):
            return row
        if time.monotonic() >= deadline:
            raise RequestInProgress(f"The {what} with this key is still being processed; retry shortly")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _order_wait_for_holder(order: Order) -> Order:
    return _wait_for(
        lambda: Order.objects.select_related("customer").get(pk=order.pk),
        lambda row: row.status != Order.Status.PENDING,
        what="checkout",
    )


# --- subscriptions: the client's cancel ----------------------------------------------------------


def subscription_cancel(
    *, user_id: uuid.UUID, subscription_id: uuid.UUID, request: HttpRequest | None = None
) -> Subscription:
    """Cancel at the end of the paid period (the user keeps access until then). Idempotent."""
    subscription = (
        Subscription.objects.select_related("plan").filter(pk=subscription_id, customer__user_id=user_id).first()
    )
    if subscription is None:
        raise NotFound("No such subscription")
    if subscription.cancel_at_period_end:
        return subscription
    if subscription.status in (
        Subscription.Status.CANCELED,
        Subscription.Status.INCOMPLETE_EXPIRED,
    ):
        raise SubscriptionNotCancelable(f"The subscription is already {subscription.status}")
    stripe_subscription = gateway.subscription_cancel_at_period_end(
        stripe_subscription_id=subscription.stripe_subscription_id,
        # Per applied version: a cancel after a reactivation is a new request, not a replay.
        idempotency_key=f"subscription-cancel:{subscription.id}:{int(subscription.stripe_updated_at.timestamp())}",
    )
    return _subscription_record_cancel(
        subscription_id=subscription.id, user_id=user_id, stripe_subscription=stripe_subscription, request=request
    )


@transaction.atomic(durable=True)
def _subscription_record_cancel(
    *, subscription_id: uuid.UUID, user_id: uuid.UUID, stripe_subscription: so.StripeObject, request: HttpRequest | None
) -> Subscription:
    subscription = Subscription.objects.select_for_update().select_related("plan").get(pk=subscription_id)
    # The webhook brings Stripe's full new state (with its event time); here only what we asked for.
    if not bool(stripe_subscription.get("cancel_at_period_end", True)) or subscription.cancel_at_period_end:
        return subscription
    subscription.cancel_at_period_end = True
    _save(subscription, ["cancel_at_period_end"])
    _audit(
        audit.AuditAction.SUBSCRIPTION_CANCEL_REQUESTED,
        actor_type=audit.ActorType.USER,
        actor_id=str(user_id),
        target_type="subscription",
        target_id=subscription.id,
        metadata={"stripe_subscription_id": subscription.stripe_subscription_id},
        request=request,
    )
    emit("subscription.updated", f"subscription:{subscription.id}", _subscription_event_data(subscription, user_id))
    return subscription


def _subscription_event_data(subscription: Subscription, user_id: uuid.UUID) -> dict[str, Any]:
    return {
        "subscription_id": str(subscription.id),
        "user_id": str(user_id),
        "plan": subscription.plan.code,
        "status": subscription.status,
        "current_period_end": subscription.current_period_end,
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }


# --- refunds -------------------------------------------------------------------------------------


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
    if holds_lease:
        return _refund_call_stripe(refund=refund, request=request)
    if refund.status == Refund.Status.REQUESTED:
        return _wait_for(
            lambda: Refund.objects.select_related("payment").get(pk=refund.pk),
            lambda row: row.status != Refund.Status.REQUESTED,
            what="refund",
        )
    return refund


def _refund_committed(payment: Payment) -> int:
    """What is already refunded or on its way back (Stripe's total, or our rows if they know more)."""
    reserving = payment.refunds.filter(status__in=Refund.RESERVING)
    requested = reserving.filter(status=Refund.Status.REQUESTED).aggregate(total=Sum("amount"))["total"] or 0
    at_stripe = reserving.exclude(status=Refund.Status.REQUESTED).aggregate(total=Sum("amount"))["total"] or 0
    return max(payment.refunded_amount, at_stripe) + requested


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
    # The payment row lock serialises every refund of this payment: the cap check and the
    # reservation happen as one step.
    payment = Payment.objects.select_for_update().filter(pk=payment_id).first()
    if payment is None:
        raise NotFound("No such payment")
    existing = Refund.objects.filter(payment=payment, idempotency_key=idempotency_key).first()
    now = timezone.now()
    lease = now + timedelta(seconds=_lease_seconds())
    if existing is not None:
        if existing.status == Refund.Status.REQUESTED and (existing.lease_until is None or existing.lease_until < now):
            existing.lease_until = lease  # its caller died mid-call: replay it with the same Stripe key
            _save(existing, ["lease_until"])
            return existing, True
        return existing, False
    if payment.status != Payment.Status.SUCCEEDED:
        raise PaymentNotRefundable(f"Only a succeeded payment can be refunded; this one is {payment.status}")
    left = payment.amount - _refund_committed(payment)
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
        lease_until=lease,
    )
    _audit(
        audit.AuditAction.REFUND_REQUESTED,
        actor_type=audit.ActorType.STAFF,
        actor_id=requested_by,
        target_type="refund",
        target_id=refund.id,
        metadata={"payment_id": str(payment.id), "amount": wanted, "currency": payment.currency, "reason": reason},
        request=request,
    )
    return refund, True


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
        _refund_record_outcome(
            refund_id=refund.id, stripe_refund=None, failure=error.detail, actor=refund.requested_by, request=request
        )
        raise
    # Any other failure (Stripe down, a timeout) leaves the refund reserved: Stripe may have done it,
    # and only a replay with the same key (or the charge.refunded webhook) can tell.
    return _refund_record_outcome(
        refund_id=refund.id, stripe_refund=stripe_refund, failure="", actor=refund.requested_by, request=request
    )


@transaction.atomic(durable=True)
def _refund_record_outcome(
    *,
    refund_id: uuid.UUID,
    stripe_refund: so.StripeObject | None,
    failure: str,
    actor: str,
    request: HttpRequest | None,
) -> Refund:
    payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
    payment = Payment.objects.select_for_update().select_related("customer").get(pk=payment_id)
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    refund.payment = payment
    if stripe_refund is None:
        if refund.status == Refund.Status.REQUESTED:
            _assign(refund, {"status": Refund.Status.FAILED, "failure_reason": failure, "lease_until": None})
            _save(refund, ["status", "failure_reason", "lease_until"])
            _audit(
                audit.AuditAction.REFUND_FAILED,
                actor_type=audit.ActorType.STAFF,
                actor_id=actor,
                target_type="refund",
                target_id=refund.id,
                metadata={"payment_id": str(payment.id), "reason": failure[:200]},
                request=request,
            )
        return refund
    _refund_apply_stripe(refund=refund, payment=payment, stripe_refund=stripe_refund, event_created=None)
    return refund


def _refund_status(stripe_refund: so.StripeObject) -> str:
    status = stripe_refund.get("status")
    if status not in Refund.Status.values or status == Refund.Status.REQUESTED:
        raise StripeObjectInvalid(f"refund status {status!r} is unknown")
    return str(status)


def _refund_apply_stripe(
    *, refund: Refund, payment: Payment, stripe_refund: so.StripeObject, event_created: datetime | None
) -> bool:
    """Bring our refund row to Stripe's state; emit refund.succeeded once. Returns whether it changed."""
    was = refund.status
    values: dict[str, Any] = {
        "stripe_refund_id": so.required_id(stripe_refund, "refund"),
        "status": _refund_status(stripe_refund),
        "lease_until": None,
    }
    if event_created is not None:
        values["stripe_updated_at"] = max(event_created, refund.stripe_updated_at or event_created)
    if values["status"] in (Refund.Status.FAILED, Refund.Status.CANCELED):
        values["failure_reason"] = str(stripe_refund.get("failure_reason") or values["status"])
    changed = _assign(refund, values)
    if not changed:
        return False
    _save(refund, changed)
    _payment_refresh_refunded(payment)
    if refund.status == Refund.Status.SUCCEEDED and was != Refund.Status.SUCCEEDED:
        _refund_succeeded(refund=refund, payment=payment)
    return any(name != "stripe_updated_at" for name in changed)


def _refund_succeeded(*, refund: Refund, payment: Payment) -> None:
    _audit(
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


def _payment_refresh_refunded(payment: Payment, *, stripe_total: int = 0) -> bool:
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
    if total == payment.refunded_amount:
        return False
    payment.refunded_amount = total
    _save(payment, ["refunded_amount"])
    return True


# --- webhook services: customers -----------------------------------------------------------------


@transaction.atomic
def customer_upsert_from_stripe(*, stripe_customer: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """customer.created / customer.updated: link a Stripe customer naming our user, keep its email."""
    if stripe_customer.get("deleted"):
        return customer_delete_from_stripe(stripe_customer=stripe_customer, event_created=event_created)
    stripe_customer_id = so.required_id(stripe_customer, "customer")
    customer = _customer_for_stripe(stripe_customer)
    if customer is None:
        return set()  # not one of ours: no metadata.user_id and never linked
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    if _is_stale(customer.stripe_updated_at, event_created):
        return set()
    values: dict[str, Any] = {"stripe_updated_at": event_created}
    email = stripe_customer.get("email")
    if isinstance(email, str) and email:
        values["email"] = email
    if customer.stripe_customer_id is None:
        values["stripe_customer_id"] = stripe_customer_id
    changed = _assign(customer, values)
    if changed:
        _save(customer, changed)
    meaningful = [name for name in changed if name != "stripe_updated_at"]
    if not meaningful:
        return set()
    _audit(
        audit.AuditAction.CUSTOMER_UPDATED,
        target_type="customer",
        target_id=customer.id,
        metadata={"stripe_customer_id": stripe_customer_id, "fields": meaningful},
    )
    return {customer.user_id}


@transaction.atomic
def customer_delete_from_stripe(*, stripe_customer: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """customer.deleted: remember that Stripe deleted it (its subscriptions end by their own events)."""
    stripe_customer_id = so.required_id(stripe_customer, "customer")
    customer = Customer.objects.select_for_update().filter(stripe_customer_id=stripe_customer_id).first()
    if customer is None or _is_stale(customer.stripe_updated_at, event_created) or customer.stripe_deleted_at:
        return set()
    _assign(customer, {"stripe_deleted_at": event_created, "stripe_updated_at": event_created})
    _save(customer, ["stripe_deleted_at", "stripe_updated_at"])
    _audit(
        audit.AuditAction.CUSTOMER_DELETED,
        target_type="customer",
        target_id=customer.id,
        metadata={"stripe_customer_id": stripe_customer_id},
    )
    return {customer.user_id}


# --- webhook services: orders --------------------------------------------------------------------


def _order_for_session(session: so.StripeObject) -> Order | None:
    order_id = so.metadata_uuid(session, "order_id")
    if order_id is None and session.get("client_reference_id"):
        try:
            order_id = uuid.UUID(str(session["client_reference_id"]))
        except ValueError as exc:
            raise StripeObjectInvalid("client_reference_id is not one of our order ids") from exc
    session_id = so.required_id(session, "checkout session")
    query = Order.objects.select_for_update().select_related("customer")
    order = query.filter(pk=order_id).first() if order_id else query.filter(stripe_session_id=session_id).first()
    if order is None and order_id is not None:
        raise StripeObjectInvalid(f"checkout session {session_id} names order {order_id}, which does not exist")
    return order


@transaction.atomic
def order_complete_from_stripe(*, session: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """checkout.session.completed: the order is completed, and the ids Checkout made are recorded."""
    order = _order_for_session(session)
    if order is None:
        return set()  # a session that did not come from our checkout (a payment link, the dashboard)
    stripe_customer_id = so.stripe_id(session.get("customer"))
    if stripe_customer_id:
        _customer_for_stripe(session.get("customer"), fallback_user_id=order.customer.user_id)
    if _is_stale(order.stripe_updated_at, event_created):
        return set()
    values: dict[str, Any] = {
        "status": Order.Status.COMPLETED,
        "stripe_session_id": so.required_id(session, "checkout session"),
        "stripe_subscription_id": so.stripe_id(session.get("subscription")) or order.stripe_subscription_id,
        "stripe_payment_intent_id": so.stripe_id(session.get("payment_intent")) or order.stripe_payment_intent_id,
        "stripe_updated_at": event_created,
        "lease_until": None,
    }
    if order.completed_at is None:
        values["completed_at"] = event_created
    changed = _assign(order, values)
    if changed:
        _save(order, changed)
    return {order.customer.user_id} if set(changed) - {"stripe_updated_at"} else set()


@transaction.atomic
def order_expire_from_stripe(*, session: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """checkout.session.expired: the checkout URL is dead; the client must start a new checkout."""
    order = _order_for_session(session)
    if order is None or _is_stale(order.stripe_updated_at, event_created) or order.status == Order.Status.COMPLETED:
        return set()
    changed = _assign(order, {"status": Order.Status.EXPIRED, "stripe_updated_at": event_created, "lease_until": None})
    if changed:
        _save(order, changed)
    return {order.customer.user_id} if "status" in changed else set()


# --- webhook services: subscriptions -------------------------------------------------------------


@transaction.atomic
def subscription_upsert_from_stripe(*, stripe_subscription: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """customer.subscription.created / updated / deleted: our row follows Stripe's object."""
    stripe_subscription_id = so.required_id(stripe_subscription, "subscription")
    status = stripe_subscription.get("status")
    if status not in Subscription.Status.values:
        raise StripeObjectInvalid(f"subscription {stripe_subscription_id} has an unknown status {status!r}")
    stripe_price_id = so.subscription_price_id(stripe_subscription)
    if not stripe_price_id:
        raise StripeObjectInvalid(f"subscription {stripe_subscription_id} has no price")
    price = Price.objects.select_related("plan").filter(stripe_price_id=stripe_price_id).first()
    if price is None:
        raise StripeObjectInvalid(
            f"subscription {stripe_subscription_id} is for price {stripe_price_id}, which is not in our catalog "
            "(import it, then replay the event)"
        )
    customer = _customer_for_stripe(
        stripe_subscription.get("customer"), fallback_user_id=so.metadata_uuid(stripe_subscription, "user_id")
    )
    if customer is None:
        # Its customer.created (with metadata.user_id) may simply not have been processed yet.
        raise TransientError(f"subscription {stripe_subscription_id}'s customer is not known yet")
    period_start, period_end = so.subscription_period(stripe_subscription)
    values: dict[str, Any] = {
        "customer": customer,
        "plan": price.plan,
        "price": price,
        "status": status,
        "current_period_start": period_start,
        "current_period_end": period_end,
        "cancel_at_period_end": bool(stripe_subscription.get("cancel_at_period_end")),
        "canceled_at": so.timestamp(stripe_subscription.get("canceled_at")),
        "ended_at": so.timestamp(stripe_subscription.get("ended_at")),
    }
    subscription, created = _create_or_lock(
        Subscription,
        {"stripe_subscription_id": stripe_subscription_id},
        {**values, "stripe_updated_at": event_created},
    )
    was_status = None if created else subscription.status
    if not created:
        if _is_stale(subscription.stripe_updated_at, event_created):
            return set()
        changed = _assign(subscription, {**values, "stripe_updated_at": event_created})
        if changed:
            _save(subscription, changed)
        if not set(changed) - {"stripe_updated_at"}:
            return set()
    event_type = _subscription_event_type(was_status, subscription.status)
    _audit(
        audit.AuditAction.SUBSCRIPTION_UPDATED,
        target_type="subscription",
        target_id=subscription.id,
        metadata={"stripe_subscription_id": stripe_subscription_id, "status": subscription.status, "event": event_type},
    )
    emit(event_type, f"subscription:{subscription.id}", _subscription_event_data(subscription, customer.user_id))
    return {customer.user_id}


def _subscription_event_type(was: str | None, now: str) -> str:
    entitling = {str(status) for status in Subscription.ENTITLING}
    if now == Subscription.Status.CANCELED and was != Subscription.Status.CANCELED:
        return "subscription.canceled"
    if now in entitling and was not in entitling:
        return "subscription.activated"
    return "subscription.updated"


# --- webhook services: payments ------------------------------------------------------------------


def _payment_status_from_invoice(invoice: so.StripeObject) -> str:
    status = invoice.get("status")
    if status == "paid":
        return Payment.Status.SUCCEEDED
    if status == "uncollectible" or (status == "open" and invoice.get("attempted")):
        return Payment.Status.FAILED
    if status == "void":
        return Payment.Status.CANCELED
    if status in ("draft", "open"):
        return Payment.Status.PENDING
    raise StripeObjectInvalid(f"invoice status {status!r} is unknown")


def _payment_status_from_intent(intent: so.StripeObject) -> str:
    status = intent.get("status")
    if status == "succeeded":
        return Payment.Status.SUCCEEDED
    if status == "canceled":
        return Payment.Status.CANCELED
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return Payment.Status.FAILED
    if status in (
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
        "processing",
        "requires_capture",
    ):
        return Payment.Status.PENDING
    raise StripeObjectInvalid(f"payment intent status {status!r} is unknown")


def _payment_locate(*, payment_intent_id: str | None, invoice_id: str | None) -> Payment | None:
    query = Payment.objects.select_for_update().select_related("customer")
    if payment_intent_id:
        found = query.filter(stripe_payment_intent_id=payment_intent_id).first()
        if found is not None:
            return found
    return query.filter(stripe_invoice_id=invoice_id).first() if invoice_id else None


def _payment_upsert(
    *,
    customer: Customer,
    payment_intent_id: str | None,
    invoice_id: str | None,
    values: dict[str, Any],
    created_at: datetime | None,
    event_created: datetime,
) -> set[uuid.UUID]:
    payment = _payment_locate(payment_intent_id=payment_intent_id, invoice_id=invoice_id)
    references = {"stripe_payment_intent_id": payment_intent_id, "stripe_invoice_id": invoice_id}
    if payment is None:
        lookup = (
            {"stripe_payment_intent_id": payment_intent_id} if payment_intent_id else {"stripe_invoice_id": invoice_id}
        )
        payment, created = _create_or_lock(
            Payment,
            lookup,
            {
                **{k: v for k, v in references.items() if k not in lookup},
                **values,
                "customer": customer,
                "stripe_updated_at": event_created,
                "created_at": created_at or timezone.now(),
            },
        )
        if created:
            _payment_recorded(payment, was=None)
            return {customer.user_id}
    if _is_stale(payment.stripe_updated_at, event_created):
        return set()
    if payment.status == Payment.Status.DISPUTED:
        values.pop("status", None)  # a dispute outranks any later replay of the payment's success
    # Only fill references we lacked: an invoice event never unlinks the intent, nor the reverse.
    values.update({k: v for k, v in references.items() if v and not getattr(payment, k)})
    if values.get("stripe_charge_id") is None or payment.stripe_charge_id:
        values.pop("stripe_charge_id", None)
    was = payment.status
    changed = _assign(payment, {**values, "stripe_updated_at": event_created})
    if changed:
        _save(payment, changed)
    if not set(changed) - {"stripe_updated_at"}:
        return set()
    _payment_recorded(payment, was=was)
    return {customer.user_id}


def _payment_recorded(payment: Payment, *, was: str | None) -> None:
    _audit(
        audit.AuditAction.PAYMENT_RECORDED,
        target_type="payment",
        target_id=payment.id,
        metadata={"status": payment.status, "amount": payment.amount, "currency": payment.currency},
    )
    if payment.status == was:
        return
    event_type = {Payment.Status.SUCCEEDED: "payment.succeeded", Payment.Status.FAILED: "payment.failed"}.get(
        Payment.Status(payment.status)
    )
    if event_type:
        emit(
            event_type,
            f"payment:{payment.id}",
            {
                "payment_id": str(payment.id),
                "user_id": str(payment.customer.user_id),
                "amount": payment.amount,
                "currency": payment.currency,
                "status": payment.status,
                "failure_code": payment.failure_code,
                "subscription_id": str(payment.subscription_id) if payment.subscription_id else None,
            },
        )


@transaction.atomic
def payment_record_from_invoice(*, invoice: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """invoice.paid / invoice.payment_succeeded / invoice.payment_failed: the invoice's payment."""
    invoice_id = so.required_id(invoice, "invoice")
    status = _payment_status_from_invoice(invoice)
    paid = status == Payment.Status.SUCCEEDED
    total = so.amount(invoice, "amount_paid" if paid else "amount_due")
    payment_intent_id = so.invoice_payment_intent_id(invoice)
    if total == 0 and not payment_intent_id:
        return set()  # a free invoice (a trial, a 100% coupon): no money moved
    subscription_id = so.invoice_subscription_id(invoice)
    subscription = (
        Subscription.objects.select_related("customer").filter(stripe_subscription_id=subscription_id).first()
        if subscription_id
        else None
    )
    customer = _customer_for_stripe(invoice.get("customer"), fallback_user_id=so.metadata_uuid(invoice, "user_id"))
    if customer is None and subscription is not None:
        customer = subscription.customer
    if customer is None:
        raise TransientError(f"invoice {invoice_id}'s customer is not known yet")
    values: dict[str, Any] = {
        "amount": total,
        "currency": so.currency(invoice),
        "status": status,
        "stripe_charge_id": so.stripe_id(invoice.get("charge")),
        "failure_code": "" if status != Payment.Status.FAILED else "invoice_payment_failed",
    }
    if subscription is not None:
        values["subscription"] = subscription
    return _payment_upsert(
        customer=customer,
        payment_intent_id=payment_intent_id,
        invoice_id=invoice_id,
        values=values,
        created_at=so.timestamp(invoice.get("created")),
        event_created=event_created,
    )


@transaction.atomic
def payment_record_from_intent(*, payment_intent: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """payment_intent.succeeded / payment_intent.payment_failed (one-time checkouts, any charge)."""
    payment_intent_id = so.required_id(payment_intent, "payment intent")
    status = _payment_status_from_intent(payment_intent)
    customer = _customer_for_stripe(
        payment_intent.get("customer"), fallback_user_id=so.metadata_uuid(payment_intent, "user_id")
    )
    if customer is None:
        if so.stripe_id(payment_intent.get("customer")):
            raise TransientError(f"payment intent {payment_intent_id}'s customer is not known yet")
        raise StripeObjectInvalid(f"payment intent {payment_intent_id} names neither a customer nor a user")
    error = so.expanded(payment_intent.get("last_payment_error")) or {}
    order_id = so.metadata_uuid(payment_intent, "order_id")
    values: dict[str, Any] = {
        "amount": so.amount(
            payment_intent,
            "amount_received"
            if status == Payment.Status.SUCCEEDED and payment_intent.get("amount_received") is not None
            else "amount",
        ),
        "currency": so.currency(payment_intent),
        "status": status,
        "stripe_charge_id": so.stripe_id(payment_intent.get("latest_charge")),
        "failure_code": str(error.get("decline_code") or error.get("code") or "")
        if status == Payment.Status.FAILED
        else "",
        "failure_message": str(error.get("message") or "")[:1000] if status == Payment.Status.FAILED else "",
    }
    if order_id and Order.objects.filter(pk=order_id, customer=customer).exists():
        values["order_id"] = order_id
    return _payment_upsert(
        customer=customer,
        payment_intent_id=payment_intent_id,
        invoice_id=so.stripe_id(payment_intent.get("invoice")),
        values=values,
        created_at=so.timestamp(payment_intent.get("created")),
        event_created=event_created,
    )


# --- webhook services: refunds and disputes ------------------------------------------------------


def _payment_for_charge(charge_ref: Any, payment_intent_ref: Any) -> Payment | None:
    query = Payment.objects.select_for_update().select_related("customer")
    charge_id = so.stripe_id(charge_ref)
    payment = query.filter(stripe_charge_id=charge_id).first() if charge_id else None
    intent_id = so.stripe_id(payment_intent_ref)
    if payment is None and intent_id:
        payment = query.filter(stripe_payment_intent_id=intent_id).first()
    return payment


@transaction.atomic
def refund_record_from_charge(*, charge: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """charge.refunded: the payment's refunded amount, and a row per refund in charge.refunds.data
    (ours are matched by metadata.refund_id; ones made in the dashboard are added)."""
    charge_id = so.required_id(charge, "charge")
    payment = _payment_for_charge(charge_id, charge.get("payment_intent"))
    if payment is None:
        raise TransientError(f"charge {charge_id}'s payment is not recorded yet")
    changed = False
    if not payment.stripe_charge_id:
        payment.stripe_charge_id = charge_id
        _save(payment, ["stripe_charge_id"])
    refunds = charge.get("refunds")
    data = refunds.get("data") if isinstance(refunds, Mapping) else None
    for stripe_refund in data if isinstance(data, list) else []:
        changed |= _refund_upsert_from_stripe(payment=payment, stripe_refund=stripe_refund, event_created=event_created)
    # Refunds are separate objects with their own versions; the total only grows, so no staleness here.
    changed |= _payment_refresh_refunded(payment, stripe_total=so.amount(charge, "amount_refunded"))
    return {payment.customer.user_id} if changed else set()


def _refund_upsert_from_stripe(*, payment: Payment, stripe_refund: so.StripeObject, event_created: datetime) -> bool:
    stripe_refund_id = so.required_id(stripe_refund, "refund")
    refund = Refund.objects.select_for_update().filter(stripe_refund_id=stripe_refund_id).first()
    ours = so.metadata_uuid(stripe_refund, "refund_id")
    if refund is None and ours is not None:
        refund = Refund.objects.select_for_update().filter(pk=ours, payment=payment).first()
    if refund is None:
        reason = stripe_refund.get("reason")
        refund, created = _create_or_lock(
            Refund,
            {"stripe_refund_id": stripe_refund_id},
            {
                "payment": payment,
                "amount": so.amount(stripe_refund, "amount"),
                "currency": so.currency(stripe_refund),
                "reason": reason if reason in Refund.Reason.values else Refund.Reason.OTHER,
                "status": _refund_status(stripe_refund),
                "requested_by": STRIPE_ACTOR,
                "stripe_updated_at": event_created,
                "created_at": so.timestamp(stripe_refund.get("created")) or timezone.now(),
            },
        )
        if created:
            if refund.status == Refund.Status.SUCCEEDED:
                _payment_refresh_refunded(payment)
                _refund_succeeded(refund=refund, payment=payment)
            return True
    if _is_stale(refund.stripe_updated_at, event_created):
        return False
    return _refund_apply_stripe(
        refund=refund, payment=payment, stripe_refund=stripe_refund, event_created=event_created
    )


@transaction.atomic
def dispute_record_from_stripe(*, dispute: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """charge.dispute.created: the payment is disputed (finance sees it; it can no longer be refunded)."""
    dispute_id = so.required_id(dispute, "dispute")
    payment = _payment_for_charge(dispute.get("charge"), dispute.get("payment_intent"))
    if payment is None:
        raise TransientError(f"dispute {dispute_id}'s payment is not recorded yet")
    if _is_stale(payment.stripe_updated_at, event_created):
        return set()
    was = payment.status
    changed = _assign(
        payment,
        {
            "status": Payment.Status.DISPUTED,
            "dispute_reason": str(dispute.get("reason") or "")[:64],
            "stripe_updated_at": event_created,
        },
    )
    if changed:
        _save(payment, changed)
    if not set(changed) - {"stripe_updated_at"}:
        return set()
    _payment_recorded(payment, was=was)
    return {payment.customer.user_id}
