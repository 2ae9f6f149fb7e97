"""Reading Stripe objects as webhooks and the API deliver them, across API versions.

Stripe moved fields between versions (a subscription's periods onto its items, an invoice's payment
intent into `payments`, its subscription into `parent`); these helpers look in every place, so the
services read one shape. Stripe's statuses become ours here, once, for the webhook services and
reconciliation alike. Nothing here touches the database.
"""

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billing.errors import StripeObjectInvalid
from billing.models import DisputeStatus, InvoiceStatus, PaymentStatus, RefundStatus

StripeObject = Mapping[str, Any]


def stripe_id(value: Any) -> str | None:
    """An id given either as a string or as an expanded object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        found = value.get("id")
        return found if isinstance(found, str) and found else None
    return None


def required_id(obj: StripeObject, what: str) -> str:
    found = stripe_id(obj.get("id"))
    if found is None:
        raise StripeObjectInvalid(f"the {what} has no id")
    return found


def timestamp(value: Any) -> datetime | None:
    """Stripe's unix seconds as an aware UTC datetime."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    raise StripeObjectInvalid(f"{value!r} is not a Stripe timestamp")


def metadata(obj: StripeObject) -> Mapping[str, Any]:
    found = obj.get("metadata")
    return found if isinstance(found, Mapping) else {}


def metadata_uuid(obj: StripeObject | None, key: str) -> uuid.UUID | None:
    """A UUID in metadata; a malformed one is bad data, not 'absent'."""
    if not isinstance(obj, Mapping):
        return None
    raw = metadata(obj).get(key)
    if not raw:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError as exc:
        raise StripeObjectInvalid(f"metadata.{key} {raw!r} is not a UUID") from exc


def amount(obj: StripeObject, key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StripeObjectInvalid(f"{key} {value!r} is not an amount in minor units")
    return value


def currency(obj: StripeObject) -> str:
    value = obj.get("currency")
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise StripeObjectInvalid(f"currency {value!r} is not an ISO-4217 code")
    return value.lower()


def subscription_item(subscription: StripeObject) -> Mapping[str, Any]:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    return data[0] if isinstance(data, list) and data and isinstance(data[0], Mapping) else {}


def subscription_price_id(subscription: StripeObject) -> str | None:
    """`items.data[0].price` (current) or the legacy `plan`, on the item or the subscription."""
    item = subscription_item(subscription)
    return stripe_id(item.get("price")) or stripe_id(item.get("plan")) or stripe_id(subscription.get("plan"))


def subscription_period(subscription: StripeObject) -> tuple[datetime | None, datetime | None]:
    """The current period: on the subscription (older versions) or on its item (2025-03-31 on)."""
    item = subscription_item(subscription)
    start = subscription.get("current_period_start") or item.get("current_period_start")
    end = subscription.get("current_period_end") or item.get("current_period_end")
    return timestamp(start), timestamp(end)


def invoice_subscription_id(invoice: StripeObject) -> str | None:
    found = stripe_id(invoice.get("subscription"))
    if found:
        return found
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    return stripe_id(details.get("subscription")) if isinstance(details, Mapping) else None


def invoice_payment_intent_id(invoice: StripeObject) -> str | None:
    found = stripe_id(invoice.get("payment_intent"))
    if found:
        return found
    payments = invoice.get("payments")
    data = payments.get("data") if isinstance(payments, Mapping) else None
    for entry in data if isinstance(data, list) else []:
        payment = entry.get("payment") if isinstance(entry, Mapping) else None
        if isinstance(payment, Mapping) and stripe_id(payment.get("payment_intent")):
            return stripe_id(payment.get("payment_intent"))
    return None


def expanded(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


# Every PaymentIntent status Stripe documents (docs.stripe.com/payments/intents#intent-statuses).
# An intent goes back to requires_payment_method when an attempt fails, with last_payment_error set.
_PAYMENT_INTENT_STATUSES = {
    "requires_payment_method": PaymentStatus.PENDING,
    "requires_confirmation": PaymentStatus.PENDING,
    "requires_action": PaymentStatus.PENDING,
    "processing": PaymentStatus.PENDING,
    "requires_capture": PaymentStatus.PENDING,  # authorised, not captured yet
    "canceled": PaymentStatus.CANCELED,
    "succeeded": PaymentStatus.SUCCEEDED,
}


def payment_intent_status(intent: StripeObject) -> PaymentStatus:
    """Our payment's status for a PaymentIntent; a status Stripe does not document is bad data, never
    guessed (a guess would let reconciliation 'fix' a payment to it)."""
    status = intent.get("status")
    if status not in _PAYMENT_INTENT_STATUSES:
        raise StripeObjectInvalid(f"payment intent status {status!r} is unknown")
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return PaymentStatus.FAILED
    return _PAYMENT_INTENT_STATUSES[status]


def invoice_payment_status(invoice: StripeObject) -> PaymentStatus:
    """Our payment's status for an invoice: an open invoice Stripe already tried to collect has failed."""
    status = invoice.get("status")
    if status == "paid":
        return PaymentStatus.SUCCEEDED
    if status == "uncollectible" or (status == "open" and invoice.get("attempted")):
        return PaymentStatus.FAILED
    if status == "void":
        return PaymentStatus.CANCELED
    if status in ("draft", "open"):
        return PaymentStatus.PENDING
    raise StripeObjectInvalid(f"invoice status {status!r} is unknown")


def refund_status(refund: StripeObject) -> RefundStatus:
    """Our refund's status: Stripe's own (`requested` is ours alone, before Stripe has the refund)."""
    status = refund.get("status")
    if status not in RefundStatus.values or status == RefundStatus.REQUESTED:
        raise StripeObjectInvalid(f"refund status {status!r} is unknown")
    return RefundStatus(status)


def invoice_status(invoice: StripeObject) -> InvoiceStatus:
    """The invoice's own status, as Stripe names it; one Stripe does not document is bad data."""
    status = invoice.get("status")
    if status not in InvoiceStatus.values:
        raise StripeObjectInvalid(f"invoice status {status!r} is unknown")
    return InvoiceStatus(status)


def dispute_status(dispute: StripeObject) -> DisputeStatus:
    status = dispute.get("status")
    if status not in DisputeStatus.values:
        raise StripeObjectInvalid(f"dispute status {status!r} is unknown")
    return DisputeStatus(status)
