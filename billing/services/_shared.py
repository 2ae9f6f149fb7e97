"""What billing's services share: changing a row, applying a Stripe version, finding customers, auditing."""

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.apps import apps
from django.db import DatabaseError, IntegrityError, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest
from django.utils import timezone

from billing import stripe_objects as so
from billing.models import Customer
from gdpr import audit
from payments_project.raw_rows import row_converter, rows_update_sql
from payments_project.write_batch import defer

M = TypeVar("M", bound=models.Model)
STRIPE_ACTOR = "stripe"
VERSION = "stripe_updated_at"


def update_fields(obj: models.Model, values: Mapping[str, Any]) -> list[str]:
    """Set the values that differ and save only those (never overwriting a concurrent change to another
    column); returns the names of the fields that changed."""
    changed = [name for name, value in values.items() if _current(obj, name, value) != _comparable(value)]
    for name, value in values.items():  # an unchanged related row we hold: no query to read it later
        if isinstance(value, models.Model) and name not in changed:
            setattr(obj, name, value)
    if changed:
        for name in changed:
            setattr(obj, name, values[name])
        obj.updated_at = timezone.now()  # type: ignore[attr-defined]
        _save_fields(obj, [*changed, "updated_at"])
    return changed


def _save_fields(obj: models.Model, names: list[str]) -> None:
    """What `obj.save(update_fields=names)` sends, without compiling the statement anew each time (billing's
    models have no save() of their own and nothing listens to their save signals): for a webhook event, the
    ORM's compiling cost more CPU than PostgreSQL's running it. In a write batch (a webhook drain's chunk) it
    waits for the connection's next statement, so the updates of consecutive events go as one."""
    connection = transaction.get_connection()
    meta = obj._meta
    params = [
        field.get_db_prep_save(field.pre_save(obj, False), connection)  # type: ignore[union-attr]
        for field in (meta.get_field(name) for name in names)
    ]
    row = (meta.pk.get_db_prep_save(obj.pk, connection), params)
    update = _rows_updater(meta.label, tuple(names))
    if not defer(update, row, read_back=(meta.label, obj.pk)):
        update([row])


@functools.lru_cache(maxsize=256)
def _rows_updater(label: str, names: tuple[str, ...]) -> Callable[[list[Any]], None]:
    """Save these fields of rows of this model, given as (primary key, values as the fields write them), in
    one UPDATE whatever their number (one function per model and fields, so that a write batch groups them)."""
    model = apps.get_model(label)

    def update(rows: list[Any]) -> None:
        latest = list(dict(rows).items())  # a row saved twice while waiting: its last values
        connection = transaction.get_connection()
        with connection.cursor() as cursor:
            cursor.execute(
                rows_update_sql(connection, model, names, len(latest)),
                [value for pk, values in latest for value in (pk, *values)],
            )
            if cursor.rowcount != len(latest):
                raise DatabaseError("Save with update_fields did not affect any rows.")  # as save() says it

    return update


def models_from_row(
    row: Sequence[Any], models_read: tuple[type[models.Model], ...], connection: BaseDatabaseWrapper
) -> list[models.Model | None]:
    """The instances one raw row holds: each model's concrete fields in turn, as the ORM's select would give
    them; None for a model whose primary key is NULL (an outer join that found nothing)."""
    convert, layout = _row_layout(connection, models_read)
    values = convert(row)
    return [
        None if values[pk] is None else model.from_db(connection.alias, names, values[start:end])
        for model, start, end, pk, names in layout
    ]


@functools.lru_cache(maxsize=64)  # keyed by the connection too: each thread has its own, a converter its own
def _row_layout(
    connection: BaseDatabaseWrapper, models_read: tuple[type[models.Model], ...]
) -> tuple[Callable[[Sequence[Any]], list[Any]], list[tuple[type[models.Model], int, int, int, list[str]]]]:
    """What models_from_row works out once per connection and models, not per row: the row's converter, and
    for each model where its columns are, where its primary key is and its fields' names."""
    fields = [field for model in models_read for field in model._meta.concrete_fields]
    layout = []
    start = 0
    for model in models_read:
        own = model._meta.concrete_fields
        layout.append((model, start, start + len(own), start + own.index(model._meta.pk), [f.attname for f in own]))
        start += len(own)
    return row_converter(connection, fields), layout


def _current(obj: models.Model, name: str, value: Any) -> Any:
    """The field's value, compared without loading a related row: a foreign key by its id."""
    if isinstance(value, models.Model):
        return getattr(obj, f"{name}_id")
    return getattr(obj, name)


def _comparable(value: Any) -> Any:
    return value.pk if isinstance(value, models.Model) else value


def apply_stripe_version(obj: models.Model, values: Mapping[str, Any], *, event_created: datetime | None) -> list[str]:
    """Bring our row to one version of a Stripe object; returns the fields that changed besides the version.

    Stripe delivers events out of order, so the row remembers the creation time of the event it last
    applied: an older version changes nothing (an empty list, as does a replay of the same version).
    `event_created=None` is an object Stripe answered our own call with: it has no event time, so it is
    applied without a version.
    """
    if event_created is None:
        return update_fields(obj, values)
    applied: datetime | None = getattr(obj, VERSION)
    if applied is not None and event_created < applied:
        return []
    changed = update_fields(obj, {**values, VERSION: event_created})
    return [name for name in changed if name != VERSION]


def create_or_lock(model: type[M], lookup: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[M, bool]:
    """INSERT, or lock the row a concurrent writer inserted first (the unique constraint decides)."""
    try:
        with transaction.atomic():
            return model._default_manager.create(**lookup, **defaults), True
    except IntegrityError:
        return model._default_manager.select_for_update().get(**lookup), False


def lock_or_create(model: type[M], lookup: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[M, bool]:
    """create_or_lock for rows that mostly exist already (a Stripe object's later versions): lock it in one
    statement, and only when it is missing pay for the savepoint and INSERT."""
    existing = model._default_manager.select_for_update().filter(**lookup).first()
    if existing is not None:
        return existing, False
    return create_or_lock(model, lookup, defaults)


def customer_get_or_create(*, user_id: uuid.UUID, email: str = "") -> Customer:
    customer, created = Customer.objects.get_or_create(user_id=user_id, defaults={"email": email})
    if not created and email and not customer.email:
        update_fields(customer, {"email": email})
    return customer


def customer_for_stripe(customer_ref: Any, *, fallback_user_id: uuid.UUID | None = None) -> Customer | None:
    """Our customer for a Stripe customer (id or expanded object), linking it when the Stripe
    customer — or, failing that, the object itself — names the user in metadata.user_id."""
    stripe_customer_id = so.stripe_id(customer_ref)
    if stripe_customer_id:
        found = Customer.objects.filter(stripe_customer_id=stripe_customer_id).first()
        if found is not None:
            return found
    user_id = so.metadata_uuid(so.expanded(customer_ref), "user_id") or fallback_user_id
    if user_id is None:
        return None
    customer = customer_get_or_create(user_id=user_id)
    if stripe_customer_id and customer.stripe_customer_id is None:
        customer_link_stripe(customer, stripe_customer_id=stripe_customer_id)
    return customer


def customer_link_stripe(customer: Customer, *, stripe_customer_id: str) -> None:
    """Link the Stripe customer unless a concurrent writer linked one first (first write wins)."""
    Customer.objects.filter(pk=customer.pk, stripe_customer_id__isnull=True).update(
        stripe_customer_id=stripe_customer_id, updated_at=timezone.now()
    )
    customer.refresh_from_db(fields=["stripe_customer_id"])


def audit_record(
    action: audit.AuditAction,
    *,
    target_type: str,
    target_id: Any,
    metadata: Mapping[str, Any],
    actor_type: audit.ActorType = audit.ActorType.PROVIDER,
    actor_id: str = STRIPE_ACTOR,
    request: HttpRequest | None = None,
) -> None:
    """An audit entry; by default Stripe is the actor (what the webhook services apply)."""
    audit.record(
        action=action,
        actor_type=actor_type,
        actor_id=actor_id,
        target_type=target_type,
        target_id=str(target_id),
        metadata=metadata,
        request=request,
    )
