"""Reconciliation: close the gaps webhooks leave, and show finance where we and Stripe disagree.

Gap-filling pulls Stripe's Events API since a stored cursor into the same inbox the webhook endpoint
writes (same uniqueness), so a missed event is processed exactly as if it had been delivered and a
delivered one never twice. The comparison fetches the subscriptions and payments that changed lately
and records each difference as a Discrepancy; where Stripe's object is newer than ours, it applies it
through the very services the webhook handlers use.

No Stripe call happens inside a transaction: fetch, then write.
"""

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import Gauge

from billing import gateway
from billing import services as billing
from billing import stripe_objects as so
from billing.errors import (
    StripeNotConfigured,
    StripeObjectInvalid,
    StripeRateLimited,
    StripeRequestFailed,
    StripeUnavailable,
)
from billing.models import Payment, Subscription
from entitlements.services import entitlements_refresh
from gdpr import audit
from webhooks.models import Discrepancy, SyncCursor
from webhooks.services import inbox_insert, stripe_event_parse

log = structlog.get_logger(__name__)

EVENTS_CURSOR = "stripe-events"
OPEN_DISCREPANCIES = Gauge(
    "payments_reconciliation_open_discrepancies",
    "Open discrepancies after the last comparison",
    multiprocess_mode="max",
)
Kind = Discrepancy.Kind
# What a comparison shrugs off for one object, Stripe out of reach or an object we cannot read (it is
# compared again on the next run).
STRIPE_ERRORS = (StripeUnavailable, StripeRateLimited, StripeNotConfigured, StripeRequestFailed, StripeObjectInvalid)


# --- gap-filling --------------------------------------------------------------------------------


@dataclass
class GapFillResult:
    skipped: bool = False  # another run holds the cursor
    pages: int = 0
    events_seen: int = 0
    events_new: int = 0


def events_gap_fill() -> GapFillResult:
    """Store every Stripe event since the cursor that the inbox does not have; the cursor moves after
    each stored page. Stripe errors (rate limits, outages) propagate after the progress is saved."""
    token = uuid.uuid4()
    if not _cursor_take(token):
        return GapFillResult(skipped=True)
    result = GapFillResult()
    try:
        cursor = SyncCursor.objects.get(name=EVENTS_CURSOR)
        if cursor.last_event_id:
            _walk_forward(cursor.last_event_id, token, result)
        else:
            _walk_window(token, result)
    finally:
        SyncCursor.objects.filter(name=EVENTS_CURSOR, lease_token=token).update(lease_token=None, lease_until=None)
    log.info("events_gap_fill_done", pages=result.pages, seen=result.events_seen, new=result.events_new)
    return result


def _cursor_take(token: uuid.UUID) -> bool:
    """Lease the cursor row; False when an unexpired lease belongs to another run."""
    now = timezone.now()
    SyncCursor.objects.get_or_create(name=EVENTS_CURSOR)
    return bool(
        SyncCursor.objects.filter(name=EVENTS_CURSOR)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_token=token, lease_until=now + timedelta(seconds=settings.RECONCILIATION_LEASE_SECONDS))
    )


def _walk_forward(last_event_id: str, token: uuid.UUID, result: GapFillResult) -> None:
    """Page from the cursor towards now: `ending_before` gives the events just newer than it."""
    for _ in range(settings.RECONCILIATION_EVENTS_MAX_PAGES):
        try:
            page = gateway.event_list(ending_before=last_event_id, limit=settings.RECONCILIATION_EVENTS_PAGE_SIZE)
        except StripeRequestFailed:
            # The cursor's event left Stripe's 30-day window: start again from the window.
            log.warning("events_cursor_unknown_to_stripe", event_id=last_event_id)
            SyncCursor.objects.filter(name=EVENTS_CURSOR, lease_token=token).update(last_event_id="")
            _walk_window(token, result)
            return
        events = page["data"]  # newest first
        if not events:
            return
        _page_store(events, token, result, newest=events[0])
        last_event_id = events[0]["id"]
        if not page.get("has_more"):
            return


def _walk_window(token: uuid.UUID, result: GapFillResult) -> None:
    """The first run (or after losing the cursor): every event of the window, newest to oldest. The
    cursor is set to the newest only once the walk is complete, so an interrupted walk starts over
    (the inbox makes that harmless)."""
    since = timezone.now() - timedelta(days=settings.RECONCILIATION_EVENTS_WINDOW_DAYS)
    starting_after: str | None = None
    newest: Mapping[str, Any] | None = None
    for _ in range(settings.RECONCILIATION_EVENTS_MAX_PAGES):
        page = gateway.event_list(
            created_gte=int(since.timestamp()),
            starting_after=starting_after,
            limit=settings.RECONCILIATION_EVENTS_PAGE_SIZE,
        )
        events = page["data"]
        if not events:
            break
        newest = newest or events[0]
        _page_store(events, token, result, newest=None)
        starting_after = events[-1]["id"]
        if not page.get("has_more"):
            break
    else:
        return  # page budget spent before the end: the next run walks again
    if newest is not None:
        _cursor_move(newest, token)


@transaction.atomic(durable=True)
def _page_store(
    events: list[Mapping[str, Any]], token: uuid.UUID, result: GapFillResult, *, newest: Mapping[str, Any] | None
) -> None:
    for event in reversed(events):  # oldest first, as they happened
        raw = json.dumps(event)
        duplicate = inbox_insert(envelope=stripe_event_parse(raw.encode()), raw_body=raw)
        result.events_seen += 1
        result.events_new += not duplicate
    if newest is not None:
        _cursor_move(newest, token)
    result.pages += 1


def _cursor_move(event: Mapping[str, Any], token: uuid.UUID) -> None:
    moved = SyncCursor.objects.filter(name=EVENTS_CURSOR, lease_token=token).update(
        last_event_id=event["id"], last_event_created=so.timestamp(event.get("created")), updated_at=timezone.now()
    )
    if not moved:
        raise RuntimeError("the reconciliation cursor lease expired mid-run; the page was not stored")


# --- state comparison ----------------------------------------------------------------------------


@dataclass
class CompareResult:
    compared: int = 0
    opened: int = 0
    fixed: int = 0
    agreed: int = 0
    unreachable: list[str] = field(default_factory=list)


Differences = dict[str, tuple[str, str]]  # kind → (our value, Stripe's value)


@dataclass(frozen=True)
class _Checked:
    """One object of ours, what Stripe says of it, and how to apply Stripe's state through billing."""

    object_type: str
    object_id: uuid.UUID
    stripe_id: str
    differences: Differences
    fixable: frozenset[str]
    apply: Callable[[], set[uuid.UUID]]


def state_compare(*, since: datetime | None = None) -> CompareResult:
    """Compare subscriptions and payments changed since `since` (and those with open discrepancies)."""
    since = since or timezone.now() - timedelta(hours=settings.RECONCILIATION_COMPARE_WINDOW_HOURS)
    result = CompareResult()
    open_ids = Discrepancy.objects.filter(resolved_at__isnull=True).values("object_id")
    subscriptions = Subscription.objects.filter(Q(updated_at__gte=since) | Q(id__in=open_ids)).select_related(
        "customer"
    )
    payments = Payment.objects.filter(Q(updated_at__gte=since) | Q(id__in=open_ids))
    objects: list[Subscription | Payment] = [*subscriptions, *payments]
    for obj in objects:
        result.compared += 1
        try:
            checked = _check(obj)
        except STRIPE_ERRORS as exc:
            result.unreachable.append(f"{obj.pk}: {exc}")
            continue
        _record(checked, result)
    OPEN_DISCREPANCIES.set(Discrepancy.objects.filter(resolved_at__isnull=True).count())
    log.info(
        "state_compare_done",
        compared=result.compared,
        opened=result.opened,
        fixed=result.fixed,
        agreed=result.agreed,
        unreachable=len(result.unreachable),
    )
    return result


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else str(value)


def _check(obj: Subscription | Payment) -> _Checked:
    return _check_subscription(obj) if isinstance(obj, Subscription) else _check_payment(obj)


def _check_subscription(subscription: Subscription) -> _Checked:
    fetched_at = timezone.now()
    theirs = gateway.subscription_retrieve(subscription.stripe_subscription_id)
    _, period_end = so.subscription_period(theirs)
    pairs = {
        Kind.SUBSCRIPTION_STATUS: (subscription.status, theirs.get("status")),
        Kind.SUBSCRIPTION_PERIOD_END: (subscription.current_period_end, period_end),
        Kind.SUBSCRIPTION_CANCEL_AT_PERIOD_END: (
            subscription.cancel_at_period_end,
            bool(theirs.get("cancel_at_period_end")),
        ),
    }
    return _Checked(
        object_type="subscription",
        object_id=subscription.id,
        stripe_id=subscription.stripe_subscription_id,
        differences={k: (_text(a), _text(b)) for k, (a, b) in pairs.items() if _text(a) != _text(b)},
        fixable=frozenset(pairs),
        apply=lambda: billing.subscription_upsert_from_stripe(stripe_subscription=theirs, event_created=fetched_at),
    )


def _check_payment(payment: Payment) -> _Checked:
    fetched_at = timezone.now()
    intent = (
        gateway.payment_intent_retrieve(payment.stripe_payment_intent_id) if payment.stripe_payment_intent_id else None
    )
    charge_id = payment.stripe_charge_id or (so.stripe_id(intent.get("latest_charge")) if intent else None)
    charge = gateway.charge_retrieve(charge_id) if charge_id else None
    pairs: dict[str, tuple[Any, Any]] = {}
    if intent is not None:
        pairs[Kind.PAYMENT_AMOUNT] = (payment.amount, intent.get("amount"))
        if payment.status != Payment.Status.DISPUTED:  # a dispute is ours to know; Stripe still says succeeded
            pairs[Kind.PAYMENT_STATUS] = (payment.status, so.payment_intent_status(intent))
    if charge is not None:
        pairs[Kind.PAYMENT_REFUNDED_AMOUNT] = (payment.refunded_amount, charge.get("amount_refunded", 0))

    def apply() -> set[uuid.UUID]:
        changed: set[uuid.UUID] = set()
        if intent is not None:
            changed |= billing.payment_record_from_intent(payment_intent=intent, event_created=fetched_at)
        if charge is not None:
            changed |= billing.refund_record_from_charge(charge=charge, event_created=fetched_at)
        return changed

    return _Checked(
        object_type="payment",
        object_id=payment.id,
        stripe_id=payment.stripe_payment_intent_id or payment.stripe_invoice_id or "",
        differences={k: (_text(a), _text(b)) for k, (a, b) in pairs.items() if _text(a) != _text(b)},
        # An amount never changes at Stripe: a different one is for a person to look at.
        fixable=frozenset({Kind.PAYMENT_STATUS, Kind.PAYMENT_REFUNDED_AMOUNT}),
        apply=apply,
    )


@transaction.atomic(durable=True)
def _record(checked: _Checked, result: CompareResult) -> None:
    fixed = _record_checked(checked, result)
    if fixed:
        audit.record(
            action=audit.AuditAction.RECONCILIATION_RESYNCED,
            actor_type=audit.ActorType.SYSTEM,
            target_type=checked.object_type,
            target_id=str(checked.object_id),
            metadata={"kinds": sorted(fixed), "stripe_id": checked.stripe_id},
        )


def _record_checked(checked: _Checked, result: CompareResult) -> set[str]:
    """Open (or refresh) a discrepancy per difference, apply Stripe's state where it decides, and
    resolve what agrees. Runs in the caller's transaction; returns the kinds it fixed."""
    now = timezone.now()
    for kind, (ours, theirs) in checked.differences.items():
        discrepancy, created = Discrepancy.objects.get_or_create(
            object_type=checked.object_type,
            object_id=checked.object_id,
            kind=kind,
            resolved_at=None,
            defaults={"stripe_id": checked.stripe_id, "our_value": ours, "stripe_value": theirs},
        )
        if not created:
            discrepancy.our_value, discrepancy.stripe_value, discrepancy.last_seen_at = ours, theirs, now
            discrepancy.save(update_fields=["our_value", "stripe_value", "last_seen_at"])
        result.opened += created
    fixable = set(checked.differences) & checked.fixable
    if fixable:
        entitlements_refresh(user_ids=checked.apply())
        result.fixed += Discrepancy.objects.filter(
            object_type=checked.object_type, object_id=checked.object_id, kind__in=fixable, resolved_at=None
        ).update(resolved_at=now, resolution=Discrepancy.Resolution.FIXED_FROM_STRIPE, resolved_by="system")
    # Kinds that agree now close whatever was open for them.
    result.agreed += (
        Discrepancy.objects.filter(object_type=checked.object_type, object_id=checked.object_id, resolved_at=None)
        .exclude(kind__in=checked.differences)
        .update(resolved_at=now, resolution=Discrepancy.Resolution.AGREED, resolved_by="system")
    )
    return fixable


# --- finance actions ---------------------------------------------------------------------------


def discrepancy_resync(*, discrepancy_id: uuid.UUID, staff_id: str, request: HttpRequest | None = None) -> None:
    """Fetch the object from Stripe now and apply it (the admin's "resync from Stripe")."""
    discrepancy = Discrepancy.objects.get(id=discrepancy_id)
    model = Subscription if discrepancy.object_type == "subscription" else Payment
    _resync_record(_check(model.objects.get(id=discrepancy.object_id)), staff_id=staff_id, request=request)


@transaction.atomic(durable=True)
def _resync_record(checked: _Checked, *, staff_id: str, request: HttpRequest | None) -> None:
    fixed = _record_checked(checked, CompareResult())
    audit.record(
        action=audit.AuditAction.RECONCILIATION_RESYNCED,
        actor_type=audit.ActorType.STAFF,
        actor_id=staff_id,
        target_type=checked.object_type,
        target_id=str(checked.object_id),
        metadata={"stripe_id": checked.stripe_id, "differences": sorted(checked.differences), "fixed": sorted(fixed)},
        request=request,
    )


@transaction.atomic(durable=True)
def discrepancy_mark_resolved(
    *, discrepancy_ids: Iterable[uuid.UUID], staff_id: str, reason: str, request: HttpRequest | None = None
) -> int:
    """A person closes discrepancies, saying why (audited)."""
    if not reason.strip():
        raise ValueError("a reason is required")
    now = timezone.now()
    resolved = 0
    for discrepancy in Discrepancy.objects.select_for_update().filter(id__in=list(discrepancy_ids), resolved_at=None):
        discrepancy.resolved_at, discrepancy.resolution = now, Discrepancy.Resolution.MANUAL
        discrepancy.resolved_by, discrepancy.resolution_note = staff_id, reason.strip()
        discrepancy.save(update_fields=["resolved_at", "resolution", "resolved_by", "resolution_note"])
        audit.record(
            action=audit.AuditAction.RECONCILIATION_RESOLVED,
            actor_type=audit.ActorType.STAFF,
            actor_id=staff_id,
            target_type="discrepancy",
            target_id=str(discrepancy.id),
            metadata={"kind": discrepancy.kind, "reason": reason.strip()},
            request=request,
        )
        resolved += 1
    return resolved
