"""Billing's personal data for GDPR export and erasure (registered with gdpr.registry in apps.ready()).

Erasure, in this order, each part idempotent:
1. every subscription that has not ended is cancelled at Stripe at once and recorded through the
   webhook service (Stripe's answer is the newest version we know);
2. the Stripe customer is deleted (a customer already gone at Stripe counts as deleted);
3. the rows are pseudonymised, not deleted: orders, subscriptions, plan changes, payments, refunds,
   invoices and disputes are records the law makes us keep (amounts, currencies, dates, numbers, Stripe ids stay). The
   customer's user id becomes the pseudonymous UUID, its email goes, checkout return URLs (the client's,
   possibly with personal query strings) go, invoices' hosted URLs (Stripe's page shows the customer's
   name and address to whoever holds the link) go, and free-text fields lose any mention of the user's
   id or addresses.
"""

import uuid
from datetime import timedelta

import stripe
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from billing import gateway
from billing.errors import StripeRequestFailed
from billing.models import (
    Customer,
    Dispute,
    Invoice,
    Order,
    Payment,
    Refund,
    Subscription,
    SubscriptionChange,
    SubscriptionStatus,
)
from billing.services import subscription_upsert_from_stripe
from gdpr import audit
from gdpr.registry import DataSubject, PersonalDataProvider, Tables, redact_text, replacements_for, rows

ENDED = (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED)


def billing_emails(*, user_id: uuid.UUID) -> set[str]:
    return set(Customer.objects.filter(user_id=user_id).exclude(email="").values_list("email", flat=True))


def billing_export(*, subject: DataSubject) -> Tables:
    customers = Customer.objects.filter(user_id=subject.user_id)
    return {
        "customers": rows(customers),
        "orders": rows(Order.objects.filter(customer__in=customers)),
        "subscriptions": rows(Subscription.objects.filter(customer__in=customers)),
        "subscription_changes": rows(SubscriptionChange.objects.filter(customer__in=customers)),
        "payments": rows(Payment.objects.filter(customer__in=customers)),
        "refunds": rows(Refund.objects.filter(payment__customer__in=customers)),
        "invoices": rows(Invoice.objects.filter(customer__in=customers)),
        "disputes": rows(Dispute.objects.filter(payment__customer__in=customers)),
    }


def billing_erase(*, subject: DataSubject) -> None:
    # A rerun after step 3 finds the customer under its pseudonymous id and repeats nothing at Stripe.
    customer = Customer.objects.filter(user_id__in=[subject.user_id, subject.pseudonymous_uuid]).first()
    if customer is None:
        return
    for subscription in customer.subscriptions.exclude(status__in=ENDED).order_by("id"):
        _subscription_end(subscription)
    stripe_deleted = customer.stripe_deleted_at is not None
    if customer.stripe_customer_id and not stripe_deleted:
        _stripe_customer_delete(customer.stripe_customer_id)
        stripe_deleted = True
    _customer_pseudonymise(customer_id=customer.id, subject=subject, stripe_deleted=stripe_deleted)


def _subscription_end(subscription: Subscription) -> None:
    stripe_subscription = gateway.subscription_retrieve(subscription.stripe_subscription_id)
    if stripe_subscription.get("status") not in ENDED:
        stripe_subscription = gateway.subscription_cancel_now(
            stripe_subscription_id=subscription.stripe_subscription_id,
            idempotency_key=f"gdpr-erasure-cancel:{subscription.id}",
        )
    # What Stripe just answered is newer than any version applied so far (clocks may disagree a little).
    version = max(timezone.now(), subscription.stripe_updated_at + timedelta(microseconds=1))
    with transaction.atomic():
        subscription_upsert_from_stripe(stripe_subscription=stripe_subscription, event_created=version)


def _stripe_customer_delete(stripe_customer_id: str) -> None:
    try:
        gateway.customer_delete(stripe_customer_id)
    except StripeRequestFailed as exc:
        cause = exc.__cause__
        if isinstance(cause, stripe.InvalidRequestError) and cause.http_status == 404:
            return  # deleted already (an earlier run, the dashboard): what erasure wants
        raise


@transaction.atomic
def _customer_pseudonymise(*, customer_id: uuid.UUID, subject: DataSubject, stripe_deleted: bool) -> None:
    # Lock order of billing: customer, then order or subscription, then payment, then refund.
    customer = Customer.objects.select_for_update().get(id=customer_id)
    now = timezone.now()
    replacements = replacements_for(subject)
    customer.user_id, customer.email, customer.updated_at = subject.pseudonymous_uuid, "", now
    if stripe_deleted:
        customer.stripe_deleted_at = customer.stripe_deleted_at or now
    # Stripe events older than this erasure (a late customer.updated with the email) are stale from now on.
    customer.stripe_updated_at = max(now, customer.stripe_updated_at or now)
    customer.save(update_fields=["user_id", "email", "updated_at", "stripe_deleted_at", "stripe_updated_at"])
    for order in Order.objects.select_for_update().filter(customer=customer):
        order.success_url, order.cancel_url = "", ""
        order.failure_message = redact_text(order.failure_message, replacements)
        order.save(update_fields=["success_url", "cancel_url", "failure_message"])
    for payment in Payment.objects.select_for_update().filter(customer=customer):
        payment.failure_message = redact_text(payment.failure_message, replacements)
        payment.save(update_fields=["failure_message"])
    for refund in Refund.objects.select_for_update().filter(payment__customer=customer):
        refund.note = redact_text(refund.note, replacements)
        refund.failure_reason = redact_text(refund.failure_reason, replacements)
        refund.save(update_fields=["note", "failure_reason"])
    # As for the customer: a late invoice event older than the erasure must not bring the URL back.
    Invoice.objects.filter(customer=customer).update(
        hosted_invoice_url="", stripe_updated_at=Greatest(F("stripe_updated_at"), Value(now)), updated_at=now
    )
    audit.record(
        action=audit.AuditAction.CUSTOMER_PSEUDONYMISED,
        actor_type=audit.ActorType.SYSTEM,
        target_type="customer",
        target_id=str(customer.id),
        metadata={"stripe_customer_deleted": stripe_deleted},
    )


PROVIDER = PersonalDataProvider(
    name="billing",
    order=10,
    models=(Customer, Order, Subscription, SubscriptionChange, Payment, Refund, Invoice, Dispute),
    export=billing_export,
    erase=billing_erase,
    emails=billing_emails,
)
