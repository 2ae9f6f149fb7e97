"""The audit trail: what record() writes, in whose transaction, and that nothing can change it after."""

import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory, override_settings
from rest_framework.request import Request

from gdpr.audit import (
    GENESIS_HASH,
    ActorType,
    AuditAction,
    AuditEvent,
    NotInTransaction,
    audit_seal_pending,
    record,
    verify_chain,
)
from gdpr.models import AuditEventPersonal, AuditTrailIsAppendOnly
from gdpr.registry import pseudonym_for

pytestmark = pytest.mark.django_db

ALICE = str(uuid.uuid4())


def _record(**overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "action": AuditAction.REFUND_REQUESTED,
        "actor_type": ActorType.STAFF,
        "actor_id": "42",
        "target_type": "payment",
        "target_id": "pay_1",
        "metadata": {"amount": 1299, "currency": "eur"},
    }
    fields.update(overrides)
    with transaction.atomic():
        event = record(**fields)  # type: ignore[arg-type]
    audit_seal_pending()  # what beat's sealer does a moment later
    event.refresh_from_db()
    return event


# --- what is written ---------------------------------------------------------------------------------


def test_record_writes_one_event_with_a_uuid7_and_the_given_fields() -> None:
    event = _record()

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.id.version == 7
    assert stored.action == "refund.requested"
    assert (stored.actor_type, stored.actor_id) == ("staff", "42")
    assert (stored.target_type, stored.target_id) == ("payment", "pay_1")
    assert stored.metadata == {"amount": 1299, "currency": "eur"}
    assert stored.occurred_at is not None


def test_record_appends_the_event_unsealed_and_the_sealer_chains_it() -> None:
    with transaction.atomic():
        event = record(action=AuditAction.ORDER_CREATED, actor_type=ActorType.SYSTEM)
    assert (event.seq, event.prev_hash, event.hash) == (None, None, None)

    assert audit_seal_pending() == 1

    event.refresh_from_db()
    assert (event.seq, event.prev_hash) == (1, GENESIS_HASH)
    assert verify_chain() == (1, None)


def test_the_first_event_links_to_genesis_and_each_next_to_the_previous() -> None:
    first = _record()
    second = _record(action=AuditAction.REFUND_SUCCEEDED)

    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert verify_chain() == (2, None)


def test_the_request_gives_ip_user_agent_and_request_id(rf: RequestFactory) -> None:
    request = rf.post(
        "/x", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.7", HTTP_USER_AGENT="ua/1"
    )
    request.request_id = "req-12345678"  # type: ignore[attr-defined]

    with override_settings(TRUSTED_PROXY_COUNT=1):
        event = _record(request=request)

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.personal.ip, stored.personal.user_agent, stored.request_id) == (
        "198.51.100.7",
        "ua/1",
        "req-12345678",
    )


def test_a_drf_request_works_as_well(rf: RequestFactory) -> None:
    django_request = rf.get("/x", REMOTE_ADDR="198.51.100.8", HTTP_USER_AGENT="app/3")
    django_request.request_id = "req-abcdefgh"  # type: ignore[attr-defined]

    event = _record(request=Request(django_request))

    assert (event.personal.ip, event.personal.user_agent, event.request_id) == ("198.51.100.8", "app/3", "req-abcdefgh")


def test_personal_metadata_is_kept_apart_from_the_hashed_metadata() -> None:
    event = _record(metadata={"email": "alice@example.com", "plan": "family"})

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.metadata == {"plan": "family"}
    assert stored.personal.metadata == {"email": "alice@example.com"}


def test_a_user_is_written_into_the_hashed_columns_only_as_their_pseudonym() -> None:
    bob = str(uuid.uuid4())

    event = _record(
        actor_type=ActorType.USER,
        actor_id=ALICE,
        target_type="user",
        target_id=bob,
        metadata={"user_id": bob, "owner_user_id": ALICE, "seats": 3},
    )

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.actor_id, stored.target_id) == (pseudonym_for(ALICE), pseudonym_for(bob))
    assert stored.metadata == {"user_id": pseudonym_for(bob), "owner_user_id": pseudonym_for(ALICE), "seats": 3}
    assert ALICE not in str(AuditEvent.objects.values().get()) and bob not in str(AuditEvent.objects.values().get())
    assert verify_chain() == (1, None)


def test_staff_and_services_keep_their_ids_and_a_user_id_must_be_a_uuid() -> None:
    staff = _record(actor_type=ActorType.STAFF, actor_id="42")
    service = _record(actor_type=ActorType.SERVICE, actor_id="spiffe://jia/app", target_type="payment")

    assert (staff.actor_id, service.actor_id) == ("42", "spiffe://jia/app")
    with pytest.raises(ValueError, match="UUID"):
        _record(actor_type=ActorType.USER, actor_id="alice")
    with pytest.raises(ValueError, match="UUID"):
        _record(target_type="user", target_id="alice@example.com")


def test_an_event_with_nothing_personal_has_no_side_row() -> None:
    event = _record()

    assert not AuditEventPersonal.objects.filter(event=event).exists()
    assert AuditEvent.objects.filter(personal__isnull=True).count() == 1


def test_metadata_values_are_stored_as_json() -> None:
    order_id = uuid.uuid4()

    event = _record(metadata={"order_id": order_id})

    assert AuditEvent.objects.get(pk=event.pk).metadata == {"order_id": str(order_id)}
    assert verify_chain()[1] is None


@pytest.mark.parametrize("action", ["refund.made_up", "", "admin.login "])
def test_an_action_outside_the_enum_is_refused(action: str) -> None:
    with pytest.raises(ValueError):
        _record(action=action)


def test_an_unknown_actor_type_is_refused() -> None:
    with pytest.raises(ValueError):
        _record(actor_type="robot")


# --- the caller's transaction ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_record_refuses_to_run_outside_a_transaction() -> None:
    with pytest.raises(NotInTransaction):
        record(action=AuditAction.ORDER_CREATED, actor_type=ActorType.SYSTEM)

    assert not AuditEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_event_rolls_back_with_the_change_it_describes() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        record(action=AuditAction.ORDER_CREATED, actor_type=ActorType.SYSTEM)
        raise Boom

    assert not AuditEvent.objects.exists()
    with transaction.atomic():
        event = record(action=AuditAction.ORDER_CREATED, actor_type=ActorType.SYSTEM)
    assert audit_seal_pending() == 1
    event.refresh_from_db()
    assert event.seq == 1  # the rolled-back row left no gap in the chain


# --- append-only: the ORM ------------------------------------------------------------------------------


def test_the_orm_refuses_to_update_an_event() -> None:
    event = _record()
    event.action = AuditAction.REFUND_SUCCEEDED

    with pytest.raises(AuditTrailIsAppendOnly):
        event.save()
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="refund.succeeded")
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.bulk_update([event], ["action"])


def test_the_orm_refuses_to_delete_an_event() -> None:
    event = _record()

    with pytest.raises(AuditTrailIsAppendOnly):
        event.delete()
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 1


def test_the_orm_refuses_events_that_bypass_record() -> None:
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.create(seq=1, actor_type="system", action="order.created", prev_hash="", hash="x")
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.bulk_create([AuditEvent(seq=1, actor_type="system", action="order.created")])


# --- append-only: the database ---------------------------------------------------------------------------


def test_the_database_rejects_an_update() -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE gdpr_auditevent SET action = 'refund.succeeded' WHERE id = %s", [event.pk])


def test_the_database_rejects_a_delete() -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM gdpr_auditevent WHERE id = %s", [event.pk])


def test_the_database_rejects_an_update_of_the_actor_and_of_the_side_data_alike() -> None:
    event = _record(request=RequestFactory().get("/", REMOTE_ADDR="198.51.100.1"))

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE gdpr_auditevent SET actor_id = '' WHERE id = %s", [event.pk])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE gdpr_auditeventpersonal SET ip = NULL WHERE event_id = %s", [event.pk])
    assert AuditEventPersonal.objects.get(event=event).ip == "198.51.100.1"
