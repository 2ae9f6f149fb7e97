"""What Stripe tells us, applied: the services behind the webhook handlers and reconciliation.

Each takes a Stripe object and the creation time of the event that carried it, runs inside the
caller's transaction (the webhook processor's; not durable), is idempotent, ignores a version older
than the one applied (`apply_stripe_version`) and returns the ids of the users whose billing state
changed.
"""

import functools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from billing import stripe_objects as so
from billing.errors import StripeObjectInvalid
from billing.models import Customer, Dispute, Order, Payment, Plan, Price, Refund, Subscription
from billing.services._shared import (
    STRIPE_ACTOR,
    apply_stripe_version,
    audit_record,
    create_or_lock,
    customer_for_stripe,
    lock_or_create,
    update_fields,
)
from billing.services.changes import scheduled_changes_apply
from billing.services.refunds import payment_refresh_refunded, refund_apply_stripe, refund_succeeded
from billing.services.subscriptions import subscription_event_data, subscription_event_type
from gdpr import audit
from payments_project.raw_rows import row_converter
from tasks.errors import NotYetKnown
from tasks.outbox import emit

# --- customers -----------------------------------------------------------------------------------


@transaction.atomic
def customer_upsert_from_stripe(*, stripe_customer: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """customer.created / customer.updated: link a Stripe customer naming our user, keep its email."""
    if stripe_customer.get("deleted"):
        return customer_delete_from_stripe(stripe_customer=stripe_customer, event_created=event_created)
    stripe_customer_id = so.required_id(stripe_customer, "customer")
    customer = customer_for_stripe(stripe_customer)
    if customer is None:
        return set()  # not one of ours: no metadata.user_id and never linked
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    values: dict[str, Any] = {}
    email = stripe_customer.get("email")
    if isinstance(email, str) and email:
        values["email"] = email
    if customer.stripe_customer_id is None:
        values["stripe_customer_id"] = stripe_customer_id
    changed = apply_stripe_version(customer, values, event_created=event_created)
    if not changed:
        return set()
    audit_record(
        audit.AuditAction.CUSTOMER_UPDATED,
        target_type="customer",
        target_id=customer.id,
        metadata={"stripe_customer_id": stripe_customer_id, "fields": changed},
    )
    return {customer.user_id}


@transaction.atomic
def customer_delete_from_stripe(*, stripe_customer: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """customer.deleted: remember that Stripe deleted it (its subscriptions end by their own events)."""
    stripe_customer_id = so.required_id(stripe_customer, "customer")
    customer = Customer.objects.select_for_update().filter(stripe_customer_id=stripe_customer_id).first()
    if customer is None or customer.stripe_deleted_at:
        return set()
    if not apply_stripe_version(customer, {"stripe_deleted_at": event_created}, event_created=event_created):
        return set()
    audit_record(
        audit.AuditAction.CUSTOMER_DELETED,
        target_type="customer",
        target_id=customer.id,
        metadata={"stripe_customer_id": stripe_customer_id},
    )
    return {customer.user_id}


# --- orders --------------------------------------------------------------------------------------


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
def order_complete_from_stripe(
    *, session: so.StripeObject, event_created: datetime, async_payment: bool = False
) -> set[uuid.UUID]:
    """checkout.session.completed (and, for a bank debit, checkout.session.async_payment_succeeded): the
    order is completed, and the ids Checkout made are recorded. A bank debit's payment is recorded from
    the session (pending, then succeeded); a card's comes with its payment intent's or invoice's events."""
    order = _order_for_session(session)
    if order is None:
        return set()  # a session that did not come from our checkout (a payment link, the dashboard)
    if so.stripe_id(session.get("customer")):
        customer_for_stripe(session.get("customer"), fallback_user_id=order.customer.user_id)
    # A bank debit: the session completes before the money arrives (payment_status "unpaid"), and
    # checkout.session.async_payment_succeeded (payment_status "paid") completes the order later.
    paid = session.get("payment_status") != "unpaid"
    values: dict[str, Any] = {
        "status": Order.Status.COMPLETED if paid else Order.Status.PROCESSING,
        "stripe_session_id": so.required_id(session, "checkout session"),
        "stripe_subscription_id": so.stripe_id(session.get("subscription")) or order.stripe_subscription_id,
        "stripe_payment_intent_id": so.stripe_id(session.get("payment_intent")) or order.stripe_payment_intent_id,
        "lease_until": None,
    }
    if order.completed_at is None and paid:
        values["completed_at"] = event_created
    changed = apply_stripe_version(order, values, event_created=event_created)
    if changed and (async_payment or not paid):
        changed += _payment_from_session(order, session, event_created=event_created)
    return {order.customer.user_id} if changed else set()


@transaction.atomic
def order_fail_from_stripe(*, session: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """checkout.session.async_payment_failed: the bank debit was refused after checkout; the order and its
    payment fail (a subscription it started stays `incomplete` at Stripe, so it grants nothing)."""
    order = _order_for_session(session)
    if order is None:
        return set()
    values = {
        "status": Order.Status.FAILED,
        "failure_code": Order.ASYNC_PAYMENT_FAILED,
        "failure_message": "The bank debit failed after checkout",
        "lease_until": None,
    }
    changed = apply_stripe_version(order, values, event_created=event_created)
    if changed:
        _payment_from_session(order, session, event_created=event_created)
        audit_record(
            audit.AuditAction.ORDER_FAILED,
            target_type="order",
            target_id=order.id,
            metadata={"failure_code": Order.ASYNC_PAYMENT_FAILED},
        )
    return {order.customer.user_id} if changed else set()


def _payment_from_session(order: Order, session: so.StripeObject, *, event_created: datetime) -> list[str]:
    """The payment a session with a known payment status carries: pending while a bank debit is on its way,
    then succeeded or failed (the payment intent's or invoice's own events refine it)."""
    payment_intent_id = so.stripe_id(session.get("payment_intent"))
    invoice_id = so.stripe_id(session.get("invoice"))
    if not (payment_intent_id or invoice_id) or session.get("amount_total") is None:
        return []
    status = {
        Order.Status.COMPLETED: Payment.Status.SUCCEEDED,
        Order.Status.PROCESSING: Payment.Status.PENDING,
        Order.Status.FAILED: Payment.Status.FAILED,
    }.get(Order.Status(order.status))
    if status is None:
        return []
    values: dict[str, Any] = {
        "amount": so.amount(session, "amount_total"),
        "currency": so.currency(session),
        "status": status,
        "order": order,
        "failure_code": Order.ASYNC_PAYMENT_FAILED if status == Payment.Status.FAILED else "",
    }
    subscription = Subscription.objects.filter(stripe_subscription_id=order.stripe_subscription_id or None).first()
    if subscription is not None:
        values["subscription"] = subscription
    changed = _payment_upsert(
        customer=order.customer,
        payment_intent_id=payment_intent_id,
        invoice_id=invoice_id,
        values=values,
        created_at=so.timestamp(session.get("created")),
        event_created=event_created,
    )
    return ["payment"] if changed else []


@transaction.atomic
def order_expire_from_stripe(*, session: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """checkout.session.expired: the checkout URL is dead; the client must start a new checkout."""
    order = _order_for_session(session)
    if order is None or order.status == Order.Status.COMPLETED:
        return set()
    changed = apply_stripe_version(
        order, {"status": Order.Status.EXPIRED, "lease_until": None}, event_created=event_created
    )
    return {order.customer.user_id} if "status" in changed else set()


# --- subscriptions -------------------------------------------------------------------------------


# No savepoint of its own: it runs in its caller's transaction (the webhook processor runs each handler
# in a savepoint already), and a failure rolls that back. Two round trips fewer per subscription event.
@transaction.atomic(savepoint=False)
def subscription_upsert_from_stripe(*, stripe_subscription: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """customer.subscription.created / updated / deleted: our row follows Stripe's object."""
    stripe_subscription_id = so.required_id(stripe_subscription, "subscription")
    status = stripe_subscription.get("status")
    if status not in Subscription.Status.values:
        raise StripeObjectInvalid(f"subscription {stripe_subscription_id} has an unknown status {status!r}")
    stripe_price_id = so.subscription_price_id(stripe_subscription)
    if not stripe_price_id:
        raise StripeObjectInvalid(f"subscription {stripe_subscription_id} has no price")
    known = _subscription_locked_of(stripe_subscription_id, so.stripe_id(stripe_subscription.get("customer")))
    price = known.price if known and known.price and known.price.stripe_price_id == stripe_price_id else None
    price = price or Price.objects.select_related("plan").filter(stripe_price_id=stripe_price_id).first()
    if price is None:
        raise StripeObjectInvalid(
            f"subscription {stripe_subscription_id} is for price {stripe_price_id}, which is not in our catalog "
            "(import it, then replay the event)"
        )
    customer = (
        known.customer
        if known
        else customer_for_stripe(
            stripe_subscription.get("customer"), fallback_user_id=so.metadata_uuid(stripe_subscription, "user_id")
        )
    )
    if customer is None:
        # Its customer.created (with metadata.user_id) may simply not have been processed yet.
        raise NotYetKnown(f"subscription {stripe_subscription_id}'s customer is not known yet", customer_missing=True)
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
        "trial_end": so.timestamp(stripe_subscription.get("trial_end")),
    }
    subscription, created = (
        (known, False)
        if known
        else lock_or_create(
            Subscription,
            {"stripe_subscription_id": stripe_subscription_id},
            {**values, "stripe_updated_at": event_created},
        )
    )
    was_status = None if created else subscription.status
    if not created:
        changed = apply_stripe_version(subscription, values, event_created=event_created)
        if not changed:
            return set()
        if "price" in changed:  # Stripe switched the price: a downgrade scheduled to it takes effect now
            scheduled_changes_apply(subscription)
    event_type = subscription_event_type(was_status, subscription.status)
    audit_record(
        audit.AuditAction.SUBSCRIPTION_UPDATED,
        target_type="subscription",
        target_id=subscription.id,
        metadata={"stripe_subscription_id": stripe_subscription_id, "status": subscription.status, "event": event_type},
    )
    emit(event_type, f"subscription:{subscription.id}", subscription_event_data(subscription, customer.user_id))
    return {customer.user_id}


def _subscription_locked_of(stripe_subscription_id: str, stripe_customer_id: str | None) -> Subscription | None:
    """Our row of a subscription, locked, when it belongs to our customer linked to this Stripe customer,
    with that customer, its price and plan: a later version of a known subscription, the common case, in
    one statement (or none: subscriptions_locked_ahead took it with the rest of a webhook chunk's). None
    otherwise, and nothing locked, so the caller finds (or links) the customer before it locks the
    subscription (the lock order)."""
    if not stripe_customer_id:
        return None
    ahead = _locked_ahead.get()
    if ahead is not None and (stripe_subscription_id, stripe_customer_id) in ahead:
        return ahead.pop((stripe_subscription_id, stripe_customer_id))  # each is applied once: a rerun locks again
    found = _subscriptions_locked([(stripe_subscription_id, stripe_customer_id)])
    return found.get((stripe_subscription_id, stripe_customer_id))


# (stripe subscription id, stripe customer id) -> the row subscriptions_locked_ahead locked (None: not ours)
_locked_ahead: ContextVar[dict[tuple[str, str], Subscription | None] | None] = ContextVar("locked_ahead", default=None)


@contextmanager
def subscriptions_locked_ahead(*, stripe_subscriptions: Sequence[so.StripeObject]) -> Iterator[None]:
    """Lock the known subscriptions of these Stripe objects (a webhook chunk's: at most one event per
    subscription and per customer) in one statement, in id order (two chunks locking some of the same
    subscriptions never wait on each other in a cycle), for subscription_upsert_from_stripe to use inside
    this block, in the caller's transaction."""
    keys = {
        (str(obj.get("id") or ""), so.stripe_id(obj.get("customer")) or "")
        for obj in stripe_subscriptions
        if isinstance(obj, Mapping)
    }
    keys = {key for key in keys if all(key)}
    found: dict[tuple[str, str], Subscription | None] = dict.fromkeys(keys)
    found |= _subscriptions_locked(sorted(keys)) if keys else {}
    token = _locked_ahead.set(found)
    try:
        yield
    finally:
        _locked_ahead.reset(token)


def _subscriptions_locked(keys: list[tuple[str, str]]) -> dict[tuple[str, str], Subscription]:
    """What `select_for_update(of=("self",)).select_related("customer", "price__plan")` would send for these
    (subscription, customer) pairs, written out once per process: the ORM compiled that statement again for
    every webhook event (more CPU than PostgreSQL spent running it). Locked in id order."""
    connection = transaction.get_connection()
    with connection.cursor() as cursor:
        statement = _subscriptions_locked_statement(connection.vendor, len(keys))
        cursor.execute(statement, [key[0] for key in keys] + [value for key in keys for value in key])
        rows = cursor.fetchall()
    found = {}
    converters = [(model, row_converter(connection, model._meta.concrete_fields)) for model in _LOCKED_TOGETHER]
    for row in rows:
        instances: list[Any] = []
        for model, convert in converters:
            fields = model._meta.concrete_fields
            values = convert(row[: len(fields)])
            row = row[len(fields) :]
            pk = values[0]  # None: no such row (a subscription without a price)
            instances.append(
                None if pk is None else model.from_db(connection.alias, [f.attname for f in fields], values)
            )
        subscription, customer, price, plan = instances
        subscription.customer = customer
        if price is not None:
            price.plan = plan
        subscription.price = price
        found[(subscription.stripe_subscription_id, customer.stripe_customer_id)] = subscription
    return found


# The rows _subscription_locked_of reads together, in the order of their columns.
_LOCKED_TOGETHER: tuple[type[models.Model], ...] = (Subscription, Customer, Price, Plan)


@functools.lru_cache(maxsize=64)
def _subscriptions_locked_statement(vendor: str, pairs: int) -> str:
    quote = transaction.get_connection().ops.quote_name
    aliases = dict(zip(_LOCKED_TOGETHER, ("s", "c", "p", "pl"), strict=True))
    columns = ", ".join(
        f"{alias}.{quote(field.column)}" for model, alias in aliases.items() for field in model._meta.concrete_fields
    )
    table = {model: quote(model._meta.db_table) for model in _LOCKED_TOGETHER}

    def column(model: type[models.Model], name: str) -> str:
        return quote(model._meta.get_field(name).column)  # type: ignore[union-attr]

    keys = f"(s.{column(Subscription, 'stripe_subscription_id')}, c.{column(Customer, 'stripe_customer_id')})"
    pairs_sql = ", ".join(["(%s, %s)"] * pairs)
    ids_sql = ", ".join(["%s"] * pairs)  # what the subscription's unique index finds; the pairs then filter
    return (
        f"SELECT {columns} FROM {table[Subscription]} s "  # noqa: S608 - identifiers from the models
        f"JOIN {table[Customer]} c ON c.id = s.{column(Subscription, 'customer')} "
        f"LEFT JOIN {table[Price]} p ON p.id = s.{column(Subscription, 'price')} "
        f"LEFT JOIN {table[Plan]} pl ON pl.id = p.{column(Price, 'plan')} "
        f"WHERE s.{column(Subscription, 'stripe_subscription_id')} IN ({ids_sql}) AND {keys} IN ({pairs_sql}) "
        "ORDER BY s.id" + (" FOR UPDATE OF s" if vendor == "postgresql" else "")  # SQLite locks it all
    )


@transaction.atomic
def subscription_trial_will_end_from_stripe(
    *, stripe_subscription: so.StripeObject, event_created: datetime
) -> set[uuid.UUID]:
    """customer.subscription.trial_will_end (three days before a trial ends): the subscription is applied
    as any version of it, and `subscription.trial_will_end` is emitted once per trial end, so a notifier
    can remind the user before the first charge."""
    changed = subscription_upsert_from_stripe(stripe_subscription=stripe_subscription, event_created=event_created)
    trial_end = so.timestamp(stripe_subscription.get("trial_end"))
    if trial_end is None:
        return changed
    stripe_subscription_id = so.required_id(stripe_subscription, "subscription")
    # The database decides "already announced": a replay or a duplicate updates no row; so does a late
    # event about a trial that has ended or moved since (the row's newest state says so).
    first = (
        Subscription.objects.filter(
            stripe_subscription_id=stripe_subscription_id, status=Subscription.Status.TRIALING, trial_end=trial_end
        )
        .exclude(trial_end_announced=trial_end)
        .update(trial_end_announced=trial_end, updated_at=timezone.now())
    )
    if first:
        subscription = Subscription.objects.select_related("plan", "customer").get(
            stripe_subscription_id=stripe_subscription_id
        )
        emit(
            "subscription.trial_will_end",
            f"subscription:{subscription.id}",
            {**subscription_event_data(subscription, subscription.customer.user_id), "trial_end": trial_end},
        )
    return changed


# --- payments ------------------------------------------------------------------------------------


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
        payment, created = create_or_lock(
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
    if payment.status == Payment.Status.DISPUTED:
        values.pop("status", None)  # a dispute outranks any later replay of the payment's success
    # Only fill references we lacked: an invoice event never unlinks the intent, nor the reverse.
    values.update({k: v for k, v in references.items() if v and not getattr(payment, k)})
    if values.get("stripe_charge_id") is None or payment.stripe_charge_id:
        values.pop("stripe_charge_id", None)
    return _payment_apply(payment, values, event_created=event_created)


def _payment_apply(payment: Payment, values: Mapping[str, Any], *, event_created: datetime) -> set[uuid.UUID]:
    was = payment.status
    if not apply_stripe_version(payment, values, event_created=event_created):
        return set()
    _payment_recorded(payment, was=was)
    return {payment.customer.user_id}


def _payment_recorded(payment: Payment, *, was: str | None) -> None:
    audit_record(
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
    status = so.invoice_payment_status(invoice)
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
    customer = customer_for_stripe(invoice.get("customer"), fallback_user_id=so.metadata_uuid(invoice, "user_id"))
    if customer is None and subscription is not None:
        customer = subscription.customer
    if customer is None:
        raise NotYetKnown(f"invoice {invoice_id}'s customer is not known yet", customer_missing=True)
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
    status = so.payment_intent_status(payment_intent)
    customer = customer_for_stripe(
        payment_intent.get("customer"), fallback_user_id=so.metadata_uuid(payment_intent, "user_id")
    )
    if customer is None:
        if so.stripe_id(payment_intent.get("customer")):
            raise NotYetKnown(f"payment intent {payment_intent_id}'s customer is not known yet", customer_missing=True)
        raise StripeObjectInvalid(f"payment intent {payment_intent_id} names neither a customer nor a user")
    error = so.expanded(payment_intent.get("last_payment_error")) or {}
    failed = status == Payment.Status.FAILED
    received = status == Payment.Status.SUCCEEDED and payment_intent.get("amount_received") is not None
    values: dict[str, Any] = {
        "amount": so.amount(payment_intent, "amount_received" if received else "amount"),
        "currency": so.currency(payment_intent),
        "status": status,
        "stripe_charge_id": so.stripe_id(payment_intent.get("latest_charge")),
        "failure_code": str(error.get("decline_code") or error.get("code") or "") if failed else "",
        "failure_message": str(error.get("message") or "")[:1000] if failed else "",
    }
    order_id = so.metadata_uuid(payment_intent, "order_id")
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


# --- refunds and disputes ------------------------------------------------------------------------


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
        raise NotYetKnown(f"charge {charge_id}'s payment is not recorded yet")
    changed = False
    if not payment.stripe_charge_id:
        update_fields(payment, {"stripe_charge_id": charge_id})
    refunds = charge.get("refunds")
    data = refunds.get("data") if isinstance(refunds, Mapping) else None
    for stripe_refund in data if isinstance(data, list) else []:
        changed |= _refund_upsert_from_stripe(payment=payment, stripe_refund=stripe_refund, event_created=event_created)
    # Refunds are separate objects with their own versions; the total only grows, so no staleness here.
    changed |= payment_refresh_refunded(payment, stripe_total=so.amount(charge, "amount_refunded"))
    return {payment.customer.user_id} if changed else set()


def _refund_upsert_from_stripe(*, payment: Payment, stripe_refund: so.StripeObject, event_created: datetime) -> bool:
    stripe_refund_id = so.required_id(stripe_refund, "refund")
    refund = Refund.objects.select_for_update().filter(stripe_refund_id=stripe_refund_id).first()
    ours = so.metadata_uuid(stripe_refund, "refund_id")
    if refund is None and ours is not None:
        refund = Refund.objects.select_for_update().filter(pk=ours, payment=payment).first()
    if refund is None:
        reason = stripe_refund.get("reason")
        refund, created = create_or_lock(
            Refund,
            {"stripe_refund_id": stripe_refund_id},
            {
                "payment": payment,
                "amount": so.amount(stripe_refund, "amount"),
                "currency": so.currency(stripe_refund),
                "reason": reason if reason in Refund.Reason.values else Refund.Reason.OTHER,
                "status": so.refund_status(stripe_refund),
                "requested_by": STRIPE_ACTOR,
                "stripe_updated_at": event_created,
                "created_at": so.timestamp(stripe_refund.get("created")) or timezone.now(),
            },
        )
        if created:
            if refund.status == Refund.Status.SUCCEEDED:
                payment_refresh_refunded(payment)
                refund_succeeded(refund=refund, payment=payment)
            return True
    return refund_apply_stripe(refund=refund, payment=payment, stripe_refund=stripe_refund, event_created=event_created)


@transaction.atomic
def dispute_record_from_stripe(*, dispute: so.StripeObject, event_created: datetime) -> set[uuid.UUID]:
    """charge.dispute.created / updated / closed: the dispute row follows Stripe's; while it is open the
    payment is `disputed` (it can no longer be refunded) and `payment.disputed` is emitted; a lost one
    records what the bank took back, a won one returns the payment to `succeeded`."""
    dispute_id = so.required_id(dispute, "dispute")
    payment = _payment_for_charge(dispute.get("charge"), dispute.get("payment_intent"))
    if payment is None:
        raise NotYetKnown(f"dispute {dispute_id}'s payment is not recorded yet")
    status = so.dispute_status(dispute)
    amount = so.amount(dispute, "amount")
    closed = status in Dispute.CLOSED
    values: dict[str, Any] = {
        "amount": amount,
        "currency": so.currency(dispute),
        "reason": str(dispute.get("reason") or "")[:64],
        "status": status,
        "reversed_amount": amount if status == Dispute.Status.LOST else 0,
        "evidence_due_by": so.timestamp(_evidence_due_by(dispute)),
    }
    found, created = create_or_lock(
        Dispute,
        {"stripe_dispute_id": dispute_id},
        {
            **values,
            "payment": payment,
            "closed_at": event_created if closed else None,
            "stripe_updated_at": event_created,
            "created_at": so.timestamp(dispute.get("created")) or event_created,
        },
    )
    was_closed = not created and found.closed_at is not None
    if not created:
        values["closed_at"] = (found.closed_at if was_closed else event_created) if closed else None
        if not apply_stripe_version(found, values, event_created=event_created):
            return set()  # a replay, or an older version arriving late: the dispute and payment stay
    audit_record(
        audit.AuditAction.DISPUTE_RECORDED,
        target_type="dispute",
        target_id=found.id,
        metadata={"payment_id": str(payment.id), "status": found.status, "amount": found.amount},
    )
    # A dispute Stripe resolved as won (or a warning closed) gives the payment back; otherwise it stays disputed.
    disputed = found.status not in (Dispute.Status.WON, Dispute.Status.WARNING_CLOSED, Dispute.Status.PREVENTED)
    was = payment.status
    update_fields(
        payment,
        {
            "status": Payment.Status.DISPUTED if disputed else Payment.Status.SUCCEEDED,
            "dispute_reason": found.reason,
        },
    )
    data = {
        "payment_id": str(payment.id),
        "user_id": str(payment.customer.user_id),
        "dispute_id": str(found.id),
        "amount": found.amount,
        "currency": found.currency,
        "reason": found.reason,
        "status": found.status,
        "reversed_amount": found.reversed_amount,
    }
    if was != Payment.Status.DISPUTED and payment.status == Payment.Status.DISPUTED:
        emit("payment.disputed", f"payment:{payment.id}", data)
    if closed and not was_closed:
        emit("payment.dispute_closed", f"payment:{payment.id}", data)
    return {payment.customer.user_id}


def _evidence_due_by(dispute: so.StripeObject) -> Any:
    details = dispute.get("evidence_details")
    return details.get("due_by") if isinstance(details, Mapping) else None
