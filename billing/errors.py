"""Billing's errors: stable codes, rendered as problem+json by payments_project.errors."""

from payments_project.errors import (
    ApplicationError,
    Conflict,
    DependencyUnavailable,
    UnprocessableEntity,
    UpstreamFailed,
    ValidationFailed,
)


class StripeNotConfigured(DependencyUnavailable):
    code = "stripe_not_configured"
    title = "Stripe is not configured"

    def __init__(self, detail: str | None = None, *, retry_after: int = 3600) -> None:
        super().__init__(
            detail or "Stripe is not configured on this server (STRIPE_API_KEY is empty)", retry_after=retry_after
        )


class StripeUnavailable(DependencyUnavailable):
    """Stripe did not answer, answered 5xx, or the circuit breaker is open: try again later."""

    code = "stripe_unavailable"
    title = "Stripe is unavailable"


class StripeTimedOut(StripeUnavailable):
    """The request's Stripe budget ran out before Stripe answered: what it asked may or may not be done, and
    asking again with the same idempotency key (the client's replay, or a sweep) finds out."""

    code = "stripe_timeout"
    title = "Stripe did not answer in time"


class StripeRateLimited(DependencyUnavailable):
    """Stripe throttled us (its 429): our dependency is saturated, so the client sees a 503."""

    code = "stripe_rate_limited"
    title = "Stripe is rate limiting requests"


class StripeRequestFailed(UpstreamFailed):
    """Stripe refused the request for good (a 4xx other than a card error): retrying will not help."""

    code = "stripe_request_failed"
    title = "Stripe refused the request"


class CardDeclined(ApplicationError):
    status_code = 402
    code = "card_declined"
    title = "The card was declined"


class IdempotencyKeyMissing(ValidationFailed):
    code = "idempotency_key_missing"
    title = "The Idempotency-Key header is required"


class IdempotencyKeyReused(UnprocessableEntity):
    code = "idempotency_key_reused"
    title = "The Idempotency-Key was already used with another request body"


class RequestInProgress(Conflict):
    """A request with the same idempotency key is still talking to Stripe."""

    code = "request_in_progress"
    title = "A request with this Idempotency-Key is still in progress"

    def __init__(self, detail: str | None = None, *, retry_after: int = 2) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class RefundExceedsPayment(Conflict):
    code = "refund_exceeds_payment"
    title = "The refund exceeds what is left of the payment"


class PaymentNotRefundable(Conflict):
    code = "payment_not_refundable"
    title = "This payment cannot be refunded"


class SubscriptionNotCancelable(Conflict):
    code = "subscription_not_cancelable"
    title = "This subscription cannot be canceled"


class SubscriptionNotResumable(Conflict):
    code = "subscription_not_resumable"
    title = "This subscription is not set to cancel"


class SubscriptionNotChangeable(Conflict):
    code = "subscription_not_changeable"
    title = "This subscription cannot change plan"


class NoBillingAccount(Conflict):
    code = "no_billing_account"
    title = "There is no billing account yet"


class StripeObjectInvalid(Exception):
    """A Stripe object lacks what a service needs: bad data, a permanent error (never retried)."""


class CatalogInvalid(Exception):
    """import_catalog's file is not a valid catalog; the message says where and why."""
