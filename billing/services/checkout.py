"""Checkout: an order per (customer, Idempotency-Key), and its Stripe Checkout session.

Stripe is called between two commits: the order (with its lease) is committed first (for a new key, its
INSERT alone), the session or the failure after, with its audit and outbox rows (the session, usually, in
one statement committed by itself: raw_rows.update_then_insert).
"""

import contextlib
import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from billing import gateway
from billing import stripe_objects as so
from billing.errors import (
    CardDeclined,
    IdempotencyKeyReused,
    StripeNotConfigured,
    StripeRateLimited,
    StripeRequestFailed,
    StripeTimedOut,
    StripeUnavailable,
)
from billing.models import Customer, Order, Plan, Price
from billing.services._leases import Lease, lease_expiry
from billing.services._shared import (
    audit_record,
    customer_get_or_create,
    customer_link_stripe,
    models_from_row,
    update_fields,
)
from gdpr import audit
from gdpr.models import AuditEvent, AuditEventPersonal
from payments_project.db_cursors import server_binding_cursor
from payments_project.errors import ApplicationError, ValidationFailed
from payments_project.raw_rows import NewRow, insert_each, insert_params, update_then_insert
from payments_project.tracing import current_traceparent
from tasks.models import OutboxMessage
from tasks.outbox import dispatch_on_commit, message_columns

ORDER_LEASE = Lease(Order, in_flight=Order.Status.PENDING, what="checkout", related=("customer",))
# A failure that a later attempt may not meet: a replay with the same key tries Stripe again.
_RETRYABLE_FAILURES = {StripeUnavailable.code, StripeRateLimited.code, StripeNotConfigured.code}
_REPLAYED_FAILURES: dict[str, type[ApplicationError]] = {
    CardDeclined.code: CardDeclined,
    StripeRequestFailed.code: StripeRequestFailed,
}


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
    found = _price_and_customer(price_id=price_id, user_id=user_id)
    if found is None:
        raise ValidationFailed(
            "No active price has this id", errors=[{"field": "price_id", "message": "No active price has this id"}]
        )
    price, customer = found
    fingerprint = checkout_fingerprint(price_id=price_id, success_url=success_url, cancel_url=cancel_url)
    order, created, holds_lease = _order_record_intent(
        customer=customer,
        user_id=user_id,
        email=email,
        price=price,
        success_url=success_url,
        cancel_url=cancel_url,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    order = ORDER_LEASE.outcome(
        order,
        holds=holds_lease,
        call=lambda held: _order_call_stripe(order=held, price=price, email=email, request=request),
    )
    # A replay after the bank debit failed gets the order as it is: the checkout itself went through.
    if order.status == Order.Status.FAILED and order.failure_code != Order.ASYNC_PAYMENT_FAILED:
        raise _REPLAYED_FAILURES.get(order.failure_code, StripeRequestFailed)(order.failure_message or None)
    return CheckoutResult(order=order, created=created)


def _order_record_intent(
    *,
    customer: Customer | None,
    user_id: uuid.UUID,
    email: str,
    price: Price,
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
    fingerprint: str,
) -> tuple[Order, bool, bool]:
    """Insert the order with a lease, or find the one this key made; returns (order, created, holds_lease).

    The usual case, a returning customer's new key, is one INSERT committed by itself (autocommit): no
    transaction, savepoint or lock to pay for. Only when the unique constraint says the key made an order
    already is that order locked and looked at, in a transaction of its own.
    """
    if connection.in_atomic_block:  # the order must be committed before Stripe is called
        raise RuntimeError("order_start_checkout inside a database transaction")
    if customer is None or (email and not customer.email):  # a first checkout, or an address to add
        customer = customer_get_or_create(user_id=user_id, email=email)
    now = timezone.now()
    order = Order(
        customer=customer,
        idempotency_key=idempotency_key,
        price=price,
        amount=price.unit_amount,
        currency=price.currency,
        request_fingerprint=fingerprint,
        success_url=success_url,
        cancel_url=cancel_url,
        lease_until=lease_expiry(now),
        traceparent=current_traceparent(),
        created_at=now,
        updated_at=now,
    )
    if not _order_insert(order):  # this key's order exists (a replay, or a concurrent request just made it)
        return _order_take_existing(customer=customer, idempotency_key=idempotency_key, fingerprint=fingerprint)
    return order, True, True


def _price_and_customer(*, price_id: uuid.UUID, user_id: uuid.UUID) -> tuple[Price, Customer | None] | None:
    """The active price (with its plan) and the user's customer (None before their first checkout), in one
    statement written once per process: the ORM compiled two queries anew on every checkout. None: no such
    active price."""
    connection = transaction.get_connection()
    params = [
        Customer._meta.get_field("user_id").get_db_prep_value(user_id, connection),
        Price._meta.pk.get_db_prep_value(price_id, connection),
    ]
    with server_binding_cursor(connection) as cursor:
        cursor.execute(_price_and_customer_statement(connection.vendor), params)
        row = cursor.fetchone()
    if row is None:
        return None
    price, plan, customer = models_from_row(row, _READ_TOGETHER, connection)
    assert isinstance(price, Price) and isinstance(plan, Plan)  # an inner join: both are there
    price.plan = plan
    return price, customer if isinstance(customer, Customer) else None


# The rows _price_and_customer reads together, in the order of their columns.
_READ_TOGETHER: tuple[type[models.Model], ...] = (Price, Plan, Customer)


@functools.lru_cache(maxsize=8)
def _price_and_customer_statement(vendor: str) -> str:  # `vendor` keys it: quoting is the vendor's
    quote = transaction.get_connection().ops.quote_name
    aliases = dict(zip(_READ_TOGETHER, ("p", "pl", "c"), strict=True))
    columns = ", ".join(
        f"{alias}.{quote(field.column)}" for model, alias in aliases.items() for field in model._meta.concrete_fields
    )

    def column(model: type[models.Model], name: str) -> str:
        return f"{aliases[model]}.{quote(model._meta.get_field(name).column)}"  # type: ignore[union-attr]

    table = {model: f"{quote(model._meta.db_table)} {alias}" for model, alias in aliases.items()}
    # Identifiers from the models; the two values are parameters (the user id, then the price id).
    return (
        f"SELECT {columns} FROM {table[Price]} INNER JOIN {table[Plan]} ON {column(Plan, 'id')} = "  # noqa: S608
        f"{column(Price, 'plan')} LEFT JOIN {table[Customer]} ON {column(Customer, 'user_id')} = %s "
        f"WHERE {column(Price, 'id')} = %s AND {column(Price, 'active')} AND {column(Plan, 'active')}"
    )


def _order_insert(order: Order) -> bool:
    """INSERT the order unless its customer used its Idempotency-Key already; whether it was inserted. The
    statement is written once per process (Order.objects.create compiled it anew on every checkout)."""
    connection = transaction.get_connection()
    params = insert_params(connection, Order, [order])
    with server_binding_cursor(connection) as cursor:
        cursor.execute(_order_insert_statement(connection.vendor), params)
        inserted = cursor.fetchone() is not None
    if inserted:
        order._state.adding, order._state.db = False, connection.alias
    return inserted


@functools.lru_cache(maxsize=8)
def _order_insert_statement(vendor: str) -> str:  # `vendor` keys it: quoting is the vendor's
    quote = transaction.get_connection().ops.quote_name
    meta = Order._meta
    [one_per_key] = [c for c in meta.constraints if c.name == "billing_order_one_per_key"]
    assert isinstance(one_per_key, models.UniqueConstraint)
    key = ", ".join(quote(meta.get_field(name).column) for name in one_per_key.fields)  # type: ignore[union-attr]
    columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
    placeholders = ", ".join(["%s"] * len(meta.concrete_fields))
    # Identifiers from the model; every value is a parameter.
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({key}) DO NOTHING RETURNING {quote(meta.pk.column)}"
    )


@transaction.atomic(durable=True)
def _order_take_existing(*, customer: Customer, idempotency_key: str, fingerprint: str) -> tuple[Order, bool, bool]:
    order = Order.objects.select_for_update().get(customer=customer, idempotency_key=idempotency_key)
    order.customer = customer
    if order.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with another request body; use a new key for a new checkout"
        )
    # Its holder died, or it failed for a reason that may have passed: this request tries again.
    holds_lease = ORDER_LEASE.take(
        order,
        now=timezone.now(),
        retry=order.status == Order.Status.FAILED and order.failure_code in _RETRYABLE_FAILURES,
        reset={"failure_code": "", "failure_message": ""},
    )
    return order, False, holds_lease


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
            traceparent=order.traceparent,
        )
        session_id, url = so.stripe_id(session.get("id")), session.get("url")
        if not session_id or not isinstance(url, str) or not url:
            raise StripeRequestFailed("Stripe answered without a checkout session id and URL")
    except StripeTimedOut:
        # Stripe may have made the session: the order stays pending for a replay or the sweep
        # (orders_resolve_abandoned), which ask again with the order's idempotency key.
        _order_release_lease(order_id=order.id)
        raise
    except ApplicationError as error:
        _order_record_failure(order_id=order.id, code=error.code, message=error.detail, request=request)
        raise
    except Exception:
        _order_record_failure(order_id=order.id, code="internal_error", message="Checkout failed", request=request)
        raise
    return _order_record_session(order=order, price=price, session_id=session_id, url=url, request=request)


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
def _order_release_lease(*, order_id: uuid.UUID) -> None:
    Order.objects.filter(pk=order_id, status=Order.Status.PENDING).update(lease_until=timezone.now())


@transaction.atomic(durable=True)
def _order_take_over_abandoned(*, order_id: uuid.UUID) -> Order | None:
    order = Order.objects.select_for_update(of=("self",)).select_related("price", "customer").get(pk=order_id)
    return order if ORDER_LEASE.take(order, now=timezone.now()) else None


def _stripe_customer_ensure(*, customer: Customer, email: str) -> str:
    """The customer's Stripe id, creating the Stripe customer (metadata.user_id) the first time."""
    if customer.stripe_customer_id:
        return customer.stripe_customer_id
    created = gateway.customer_create(email=email, user_id=str(customer.user_id), customer_id=str(customer.id))
    stripe_customer_id = so.stripe_id(created.get("id"))
    if not stripe_customer_id:
        raise StripeRequestFailed("Stripe answered without a customer id")
    with transaction.atomic(durable=True):
        # The idempotency key makes a concurrent creator get the same Stripe customer.
        customer_link_stripe(customer, stripe_customer_id=stripe_customer_id)
    return customer.stripe_customer_id or stripe_customer_id


def _order_audit(
    order: Order, action: audit.AuditAction, metadata: dict[str, Any], request: HttpRequest | None
) -> None:
    audit_record(
        action,
        actor_type=audit.ActorType.USER,
        actor_id=str(order.customer.user_id),
        target_type="order",
        target_id=order.id,
        metadata=metadata,
        request=request,
    )


def _order_record_session(
    *, order: Order, price: Price, session_id: str, url: str, request: HttpRequest | None
) -> Order:
    now = timezone.now()
    rows = _order_created_rows(order=order, price=price, request=request)
    # The usual case in one statement, committed by itself: the pending order without a session gets it (status
    # open, lease cleared) and, only then, its audit rows and outbox message go in with it.
    connection = transaction.get_connection()
    meta = Order._meta
    params = [
        session_id,
        url,
        Order.Status.OPEN.value,
        meta.get_field("updated_at").get_db_prep_save(now, connection),
        meta.pk.get_db_prep_save(order.pk, connection),
        Order.Status.PENDING.value,
    ]
    if not update_then_insert(_order_open_statement(connection.vendor), params, rows):
        return _order_record_late_session(order_id=order.pk, session_id=session_id, url=url, rows=rows)
    order.stripe_session_id, order.checkout_url, order.lease_until = session_id, url, None
    order.status, order.updated_at = Order.Status.OPEN, now
    dispatch_on_commit()  # committed already: the dispatcher is nudged now
    return order


@transaction.atomic(durable=True)
def _order_record_late_session(*, order_id: uuid.UUID, session_id: str, url: str, rows: list[NewRow]) -> Order:
    """A fast webhook, a replay or the sweep got to the order first: change only what differs, and audit and
    announce the session only when this request is the one that recorded it."""
    order = Order.objects.select_for_update().select_related("customer").get(pk=order_id)
    values: dict[str, Any] = {"stripe_session_id": session_id, "checkout_url": url, "lease_until": None}
    if order.status == Order.Status.PENDING:
        values["status"] = Order.Status.OPEN
    if "stripe_session_id" in update_fields(order, values):
        insert_each(rows)
        dispatch_on_commit()
    return order


def _order_created_rows(*, order: Order, price: Price, request: HttpRequest | None) -> list[NewRow]:
    """The audit rows and the outbox message of an order that got its session, as column values."""
    plan, user_id = price.plan.code, str(order.customer.user_id)
    event, personal = audit.entry(
        action=audit.AuditAction.ORDER_CREATED,
        actor_type=audit.ActorType.USER,
        actor_id=user_id,
        target_type="order",
        target_id=str(order.id),
        metadata={"plan": plan, "amount": order.amount, "currency": order.currency},
        request=request,
    )
    message = message_columns(
        "order.created",
        f"order:{order.id}",
        {
            "order_id": str(order.id),
            "user_id": user_id,
            "plan": plan,
            "price_id": str(order.price_id),
            "amount": order.amount,
            "currency": order.currency,
        },
    )
    return [(AuditEvent, event), *([(AuditEventPersonal, personal)] if personal else []), (OutboxMessage, message)]


@functools.lru_cache(maxsize=8)
def _order_open_statement(vendor: str) -> str:  # `vendor` keys it: quoting is the vendor's
    quote = transaction.get_connection().ops.quote_name
    meta = Order._meta

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)  # type: ignore[union-attr]

    # Identifiers from the model; every value is a parameter.
    return (
        f"UPDATE {quote(meta.db_table)} SET {column('stripe_session_id')} = %s, {column('checkout_url')} = %s, "  # noqa: S608
        f"{column('lease_until')} = NULL, {column('status')} = %s, {column('updated_at')} = %s "
        f"WHERE {column('id')} = %s AND {column('status')} = %s AND {column('stripe_session_id')} IS NULL"
    )


@transaction.atomic(durable=True)
def _order_record_failure(*, order_id: uuid.UUID, code: str, message: str, request: HttpRequest | None) -> None:
    order = Order.objects.select_for_update().select_related("customer").get(pk=order_id)
    if order.status != Order.Status.PENDING:
        return
    update_fields(
        order, {"status": Order.Status.FAILED, "failure_code": code, "failure_message": message, "lease_until": None}
    )
    _order_audit(order, audit.AuditAction.ORDER_FAILED, {"code": code}, request)
