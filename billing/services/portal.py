"""The Stripe customer portal: where a customer manages payment methods and sees invoices."""

import uuid

from django.db import transaction
from django.http import HttpRequest

from billing import gateway
from billing import stripe_objects as so
from billing.errors import NoBillingAccount, StripeNotConfigured, StripeRequestFailed
from billing.models import Customer
from billing.services._shared import audit_record
from gdpr import audit


def billing_portal_session_create(*, user_id: uuid.UUID, return_url: str, request: HttpRequest | None = None) -> str:
    """A portal session for the caller's Stripe customer; its URL (short-lived, single use at Stripe).

    A user Stripe does not know yet (never checked out) has nothing to manage there: 409.
    """
    if not gateway.is_configured():
        raise StripeNotConfigured()
    customer = Customer.objects.filter(user_id=user_id, stripe_customer_id__isnull=False).first()
    if customer is None or customer.stripe_customer_id is None or customer.stripe_deleted_at is not None:
        raise NoBillingAccount("You have no billing account yet: it is made by your first checkout")
    session = gateway.billing_portal_session_create(
        stripe_customer_id=customer.stripe_customer_id,
        return_url=return_url,
        # Each request is a new session; the key only makes the gateway's own retries of it safe.
        idempotency_key=f"billing-portal:{customer.id}:{uuid.uuid4()}",
    )
    url = session.get("url")
    if not isinstance(url, str) or not url:
        raise StripeRequestFailed("Stripe answered without a portal URL")
    with transaction.atomic(durable=True):
        audit_record(
            audit.AuditAction.BILLING_PORTAL_OPENED,
            actor_type=audit.ActorType.USER,
            actor_id=str(user_id),
            target_type="customer",
            target_id=customer.id,
            metadata={"stripe_session_id": so.stripe_id(session.get("id")) or ""},
            request=request,
        )
    return url
