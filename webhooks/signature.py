"""Stripe-Signature verification against every configured secret (rotation: old and new both valid)."""

import stripe
from django.conf import settings

from webhooks.errors import WebhookRejected


def stripe_signature_verify(*, payload: bytes, header: str | None) -> None:
    """Raise WebhookRejected unless one of STRIPE_WEBHOOK_SECRETS signed `payload` within the tolerance."""
    if not header:
        raise WebhookRejected("The Stripe-Signature header is missing", reason="missing_signature")
    if not header.isascii():  # Stripe sends ASCII; stripe-python compares str digests, a TypeError (500) otherwise
        raise WebhookRejected("The Stripe-Signature header is not ASCII", reason="bad_signature")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRejected("The body is not UTF-8", reason="malformed") from exc
    stale = False
    for secret in settings.STRIPE_WEBHOOK_SECRETS:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance=settings.WEBHOOK_TOLERANCE_SECONDS)
            return
        except stripe.SignatureVerificationError as exc:
            # stripe checks the signature before the timestamp: this secret signed it, but long ago
            stale = stale or "tolerance" in str(exc)
    if stale:
        raise WebhookRejected("The signature timestamp is outside the tolerance", reason="stale_timestamp")
    raise WebhookRejected("The signature does not match any configured secret", reason="bad_signature")
