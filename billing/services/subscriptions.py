"""Subscriptions: the client's cancel and resume, and what an announcement of a subscription carries."""

import uuid
from typing import Any

from django.db import transaction
from django.http import HttpRequest

from billing import gateway
from billing import stripe_objects as so
from billing.errors import SubscriptionNotCancelable, SubscriptionNotResumable
from billing.models import Subscription
from billing.services._shared import audit_record, update_fields
from gdpr import audit
from payments_project.errors import NotFound
from tasks.outbox import emit


def subscription_cancel(
    *, user_id: uuid.UUID, subscription_id: uuid.UUID, request: HttpRequest | None = None
) -> Subscription:
    """Cancel at the end of the paid period (the user keeps access until then). Idempotent."""
    subscription = subscription_get_owned(user_id=user_id, subscription_id=subscription_id)
    if subscription.cancel_at_period_end:
        return subscription
    if subscription.status in (
        Subscription.Status.CANCELED,
        Subscription.Status.INCOMPLETE_EXPIRED,
    ):
        raise SubscriptionNotCancelable(f"The subscription is already {subscription.status}")
    stripe_subscription = gateway.subscription_cancel_at_period_end(
        stripe_subscription_id=subscription.stripe_subscription_id,
        idempotency_key=f"subscription-cancel:{_row_version(subscription)}",
    )
    return _subscription_record_cancel_at_period_end(
        subscription_id=subscription.id,
        user_id=user_id,
        stripe_subscription=stripe_subscription,
        request=request,
        cancel=True,
    )


def subscription_get_owned(*, user_id: uuid.UUID, subscription_id: uuid.UUID) -> Subscription:
    """The caller's subscription; another user's is a 404, like one that does not exist."""
    subscription = (
        Subscription.objects.select_related("plan", "price", "customer")
        .filter(pk=subscription_id, customer__user_id=user_id)
        .first()
    )
    if subscription is None:
        raise NotFound("No such subscription")
    return subscription


def _row_version(subscription: Subscription) -> str:
    """Per version of our row: a cancel after a resume (or the reverse) is a new request at Stripe, while a
    retry of one that failed half-way sends the same key (the row did not change)."""
    return f"{subscription.id}:{int(subscription.updated_at.timestamp() * 1_000_000)}"


def subscription_resume(
    *, user_id: uuid.UUID, subscription_id: uuid.UUID, request: HttpRequest | None = None
) -> Subscription:
    """Undo a cancel at period end: the subscription renews again. 409 unless it is set to cancel."""
    subscription = subscription_get_owned(user_id=user_id, subscription_id=subscription_id)
    if not subscription.cancel_at_period_end or subscription.status not in Subscription.ENTITLING:
        raise SubscriptionNotResumable(
            "Only a subscription that is still running and set to cancel at period end can be resumed"
        )
    stripe_subscription = gateway.subscription_resume(
        stripe_subscription_id=subscription.stripe_subscription_id,
        idempotency_key=f"subscription-resume:{_row_version(subscription)}",
    )
    return _subscription_record_cancel_at_period_end(
        subscription_id=subscription.id,
        user_id=user_id,
        stripe_subscription=stripe_subscription,
        request=request,
        cancel=False,
    )


@transaction.atomic(durable=True)
def _subscription_record_cancel_at_period_end(
    *,
    subscription_id: uuid.UUID,
    user_id: uuid.UUID,
    stripe_subscription: so.StripeObject,
    request: HttpRequest | None,
    cancel: bool,
) -> Subscription:
    """Record what Stripe answered to the user's cancel (`cancel`) or resume (not `cancel`)."""
    subscription = Subscription.objects.select_for_update().select_related("plan").get(pk=subscription_id)
    # The webhook brings Stripe's full new state (with its event time); here only what we asked for.
    stripe_says = bool(stripe_subscription.get("cancel_at_period_end", cancel))
    if stripe_says != cancel or subscription.cancel_at_period_end == cancel:
        return subscription
    update_fields(subscription, {"cancel_at_period_end": cancel})
    audit_record(
        audit.AuditAction.SUBSCRIPTION_CANCEL_REQUESTED if cancel else audit.AuditAction.SUBSCRIPTION_RESUME_REQUESTED,
        actor_type=audit.ActorType.USER,
        actor_id=str(user_id),
        target_type="subscription",
        target_id=subscription.id,
        metadata={"stripe_subscription_id": subscription.stripe_subscription_id},
        request=request,
    )
    emit("subscription.updated", f"subscription:{subscription.id}", subscription_event_data(subscription, user_id))
    return subscription


def subscription_event_data(subscription: Subscription, user_id: uuid.UUID) -> dict[str, Any]:
    """The payload of every subscription.* event."""
    return {
        "subscription_id": str(subscription.id),
        "user_id": str(user_id),
        "plan": subscription.plan.code,
        "status": subscription.status,
        "current_period_end": subscription.current_period_end,
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }


def subscription_event_type(was: str | None, now: str) -> str:
    """Which subscription.* event a change of status announces."""
    entitling = {str(status) for status in Subscription.ENTITLING}
    if now == Subscription.Status.CANCELED and was != Subscription.Status.CANCELED:
        return "subscription.canceled"
    if now in entitling and was not in entitling:
        return "subscription.activated"
    return "subscription.updated"
