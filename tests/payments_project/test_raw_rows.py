"""A change and the rows that describe it written as one: raw_rows.update_then_insert."""

import uuid
from datetime import datetime
from typing import Any

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, models
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import Order
from gdpr import audit
from gdpr.models import AuditEvent, AuditEventPersonal
from payments_project.raw_rows import NewRow, insert_each, insert_params, row_params, update_then_insert
from tasks.models import OutboxMessage
from tasks.outbox import message_columns, new_message
from tests.billing.factories import CustomerFactory, OrderFactory, PriceFactory

pytestmark = pytest.mark.django_db(transaction=True)

# Mark a pending order failed (PostgreSQL's quoting; the tests run there).
FAIL_PENDING = 'UPDATE "billing_order" SET "failure_code" = %s, "status" = %s WHERE "id" = %s AND "status" = %s'


def _fail_pending(order: Order, *, message_id: object = None) -> bool:
    event, _ = audit.entry(
        action=audit.AuditAction.ORDER_FAILED,
        actor_type=audit.ActorType.SYSTEM,
        target_type="order",
        target_id=str(order.id),
        metadata={"code": "gone"},
    )
    message = message_columns("order.failed", f"order:{order.id}", {"order_id": str(order.id)})
    if message_id is not None:
        message["id"] = message_id
    rows: list[NewRow] = [(AuditEvent, event), (OutboxMessage, message)]
    return update_then_insert(FAIL_PENDING, ["gone", "failed", order.id, "pending"], rows)


def test_a_change_and_its_rows_go_in_as_one_statement_outside_a_transaction() -> None:
    order = OrderFactory(status=Order.Status.PENDING)

    with CaptureQueriesContext(connection) as queries:
        changed = _fail_pending(order)

    assert changed is True
    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["WITH"]
    order.refresh_from_db()
    assert (order.status, order.failure_code) == ("failed", "gone")
    assert AuditEvent.objects.filter(action="order.failed", target_id=str(order.id)).count() == 1
    assert OutboxMessage.objects.filter(type="order.failed", subject=f"order:{order.id}").count() == 1


def test_no_rows_go_in_when_the_update_changes_nothing() -> None:
    order = OrderFactory(status=Order.Status.OPEN)  # not pending: the update finds no row

    assert _fail_pending(order) is False

    assert Order.objects.get(pk=order.pk).status == Order.Status.OPEN
    assert not AuditEvent.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_a_row_that_cannot_go_in_takes_the_change_and_the_other_rows_with_it() -> None:
    order = OrderFactory(status=Order.Status.PENDING)
    taken = new_message("order.other", "order:other", {})
    OutboxMessage.objects.bulk_create([taken])

    with pytest.raises(IntegrityError):
        _fail_pending(order, message_id=taken.id)  # its message's id is taken

    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING
    assert not AuditEvent.objects.exists()
    assert OutboxMessage.objects.count() == 1


def _as_the_fields_write(rows: list[models.Model]) -> list[Any]:
    return [
        field.get_db_prep_save(field.pre_save(row, add=True), connection)
        for row in rows
        for field in type(row)._meta.concrete_fields
    ]


def _comparable(params: list[Any]) -> list[tuple[type, Any]]:
    # A JSON value is wrapped anew each time (psycopg's Jsonb): compared by what it wraps; anything else by
    # type and value (an integer's sized type included).
    return [(type(value), getattr(value, "obj", value)) for value in params]


def test_insert_parameters_are_what_the_fields_write() -> None:
    unsaved_order = OrderFactory.build(
        customer=CustomerFactory(), price=PriceFactory(), status=Order.Status.PENDING, stripe_session_id=None
    )

    params = insert_params(connection, Order, [unsaved_order])

    assert _comparable(params) == _comparable(_as_the_fields_write([unsaved_order]))


def test_a_rows_column_values_are_written_as_its_fields_write_them_left_out_ones_as_their_defaults() -> None:
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="app/2.1")
    event, personal = audit.entry(
        action=audit.AuditAction.ORDER_CREATED,
        actor_type=audit.ActorType.USER,
        actor_id=str(uuid.uuid4()),
        target_type="order",
        target_id=str(uuid.uuid4()),
        metadata={"plan": "family", "amount": 500, "email": "someone@example.com"},
        request=request,
    )
    assert personal is not None
    message = message_columns("order.created", "order:1", {"order_id": "1"})
    # The defaults that differ at each call (a new id, the time) given here, the others left out.
    message |= {"id": uuid.uuid4(), "created_at": timezone.now(), "next_attempt_at": timezone.now()}

    for model, columns in ((AuditEvent, event), (AuditEventPersonal, personal), (OutboxMessage, message)):
        params = row_params(connection, model, columns)

        assert _comparable(params) == _comparable(_as_the_fields_write([model(**columns)]))


def test_a_naive_datetime_is_made_aware_as_the_field_does() -> None:
    unsaved_order = OrderFactory.build(customer=CustomerFactory(), price=PriceFactory())
    unsaved_order.lease_until = datetime(2026, 1, 2, 3, 4, 5)  # naive on purpose

    with pytest.warns(RuntimeWarning, match="naive datetime"):
        params = insert_params(connection, Order, [unsaved_order])

    with pytest.warns(RuntimeWarning, match="naive datetime"):
        assert _comparable(params) == _comparable(_as_the_fields_write([unsaved_order]))


def test_insert_each_puts_each_row_in_with_a_statement_of_its_own() -> None:
    order = OrderFactory()
    event, _ = audit.entry(
        action=audit.AuditAction.ORDER_CREATED, actor_type=audit.ActorType.SYSTEM, target_type="order", target_id="1"
    )
    message = message_columns("order.created", f"order:{order.id}", {"order_id": str(order.id)})

    with CaptureQueriesContext(connection) as queries:
        insert_each([(AuditEvent, event), (OutboxMessage, message)])

    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["INSERT", "INSERT"]
    stored = AuditEvent.objects.get(pk=event["id"])
    assert (stored.action, stored.target_id, stored.seq) == ("order.created", "1", None)
    stored_message = OutboxMessage.objects.get(subject=f"order:{order.id}")
    assert (stored_message.status, stored_message.attempts, stored_message.data) == (
        OutboxMessage.Status.PENDING,
        0,
        {"order_id": str(order.id)},
    )


def test_a_row_of_a_model_with_a_field_set_on_save_is_refused() -> None:
    # given: a model with an auto_now field (none of ours has one), registered for this test only: a NewRow's
    # values pass through no pre_save, so its column would go in as its default instead of the time of the save
    class Stamped(models.Model):  # noqa: DJ008 - never shown
        changed_at = models.DateTimeField(auto_now=True)

        class Meta:
            app_label = "tasks"

    try:
        # when / then
        with pytest.raises(TypeError, match="set on save"):
            row_params(connection, Stamped, {})
    finally:
        del apps.all_models["tasks"]["stamped"]
        apps.clear_cache()
