"""The lease a request holds on an order, a refund or a plan change while it talks to Stripe.

Concurrent requests with one Idempotency-Key find one row: only the holder of its lease calls Stripe,
the others wait for its outcome. A holder that died leaves a lease that runs out; the next request
(or a sweeper) takes it over and calls Stripe again with the row's Stripe idempotency key, so Stripe
acts once whoever asks.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from django.conf import settings

from billing.errors import RequestInProgress
from billing.models import Order, Refund, SubscriptionChange
from billing.services._shared import update_fields

Leased = TypeVar("Leased", Order, Refund, SubscriptionChange)


def lease_expiry(now: datetime) -> datetime:
    """Long enough for the slowest Stripe exchange a holder can make (two calls, every retry)."""
    per_call = (settings.STRIPE_CONNECT_TIMEOUT_SECONDS + settings.STRIPE_READ_TIMEOUT_SECONDS) * (
        settings.STRIPE_MAX_NETWORK_RETRIES + 1
    )
    return now + timedelta(seconds=2 * per_call + 10)


@dataclass(frozen=True)
class Lease(Generic[Leased]):
    """How one model's rows are leased: the status they hold while their holder talks to Stripe."""

    model: type[Leased]
    in_flight: str
    what: str  # named in the 409 a waiting request gets
    related: tuple[str, ...] = field(default=())  # loaded with the row a waiting request returns

    def take(self, row: Leased, *, now: datetime, retry: bool = False, reset: Mapping[str, Any] | None = None) -> bool:
        """Take over the locked row when its holder died (still in flight, lease run out), or when
        `retry` says its failure may have passed; `reset` clears what that attempt left. Returns
        whether this request now holds the lease."""
        abandoned = row.status == self.in_flight and (row.lease_until is None or row.lease_until < now)
        if not (abandoned or retry):
            return False
        update_fields(row, {**(reset or {}), "status": self.in_flight, "lease_until": lease_expiry(now)})
        return True

    def outcome(self, row: Leased, *, holds: bool, call: Callable[[Leased], Leased]) -> Leased:
        """The holder makes the call; any other request waits while the row is in flight, then
        returns it as the holder left it (or answers 409 with Retry-After if that takes too long)."""
        if holds:
            return call(row)
        deadline = time.monotonic() + settings.BILLING_IN_FLIGHT_WAIT_SECONDS
        delay = 0.02
        while row.status == self.in_flight:
            if time.monotonic() >= deadline:
                raise RequestInProgress(f"The {self.what} with this key is still being processed; retry shortly")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
            row = self.model._default_manager.select_related(*self.related).get(pk=row.pk)
        return row
