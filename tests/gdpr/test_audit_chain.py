"""The hash chain: tampering is found, erasure is not tampering, concurrent writers make one chain, the
sealer chains each row once."""

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory

from gdpr.audit import (
    ActorType,
    AuditAction,
    AuditEvent,
    AuditEventPersonal,
    audit_seal_pending,
    event_hash,
    pending_count,
    record,
    verify_chain,
)
from gdpr.registry import DataSubject, pseudonym_for
from gdpr.services import audit_personal_erase
from tests.support.races import race, raised

pytestmark = pytest.mark.django_db

ALICE, BOB = str(uuid.uuid4()), str(uuid.uuid4())


def _append(actor_id: str = ALICE, **metadata: object) -> AuditEvent:
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="app/2.1")
    with transaction.atomic():
        return record(
            action=AuditAction.FAMILY_MEMBER_ADDED,
            actor_type=ActorType.USER,
            actor_id=actor_id,
            target_type="family",
            target_id="fam_1",
            metadata={"email": "member@example.com", "seats": 3, **metadata},
            request=request,
        )


def _record(actor_id: str = ALICE, **metadata: object) -> AuditEvent:
    """An event appended and sealed, as beat's sealer would do a moment later."""
    event = _append(actor_id, **metadata)
    audit_seal_pending()
    event.refresh_from_db()
    return event


def _all_sealed() -> int:
    sealed = 0
    while batch := audit_seal_pending():
        sealed += batch
    return sealed


def _write(n: int, count: int) -> None:
    for i in range(count):
        with transaction.atomic():
            record(
                action=AuditAction.PAYMENT_RECORDED,
                actor_type=ActorType.PROVIDER,
                actor_id="stripe",
                target_id=f"{n}-{i}",
            )


@contextmanager
def _trigger_disabled() -> Iterator[None]:
    """What an attacker with table-owner rights could do; the chain must still tell."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE gdpr_auditevent DISABLE TRIGGER gdpr_auditevent_append_only")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE gdpr_auditevent ENABLE TRIGGER gdpr_auditevent_append_only")


def _sql(statement: str, params: list[object]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _erase(user_id: str) -> int:
    return audit_personal_erase(subject=DataSubject(user_id=uuid.UUID(user_id), pseudonym=pseudonym_for(user_id)))


def _delete_event(where: str, params: list[object]) -> None:
    """An event and its side row, as someone bypassing the trigger would remove it."""
    _sql("SET CONSTRAINTS ALL IMMEDIATE", [])  # no foreign-key check left pending: the trigger is altered next
    events = f"SELECT id FROM gdpr_auditevent WHERE {where}"  # noqa: S608 - the test's own condition
    _sql(f"DELETE FROM gdpr_auditeventpersonal WHERE event_id IN ({events})", params)  # noqa: S608
    _sql(f"DELETE FROM gdpr_auditevent WHERE id IN ({events})", params)  # noqa: S608


# --- verification ----------------------------------------------------------------------------------------


def test_an_intact_chain_verifies_and_the_command_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        _record()

    call_command("verify_audit_chain")

    assert "3 events verified" in capsys.readouterr().out


def test_the_command_prints_the_head_and_checks_an_anchor(capsys: pytest.CaptureFixture[str]) -> None:
    events = [_record() for _ in range(3)]
    call_command("verify_audit_chain")
    head = capsys.readouterr().out.strip().rsplit(" ", 1)[-1].rstrip(".")
    assert head == f"3:{events[2].hash}"

    call_command("verify_audit_chain", "--anchor", head)  # still there: fine
    with _trigger_disabled():
        _delete_event("seq = 3", [])  # the newest row: no link breaks

    assert verify_chain() == (2, None)
    with pytest.raises(CommandError, match="anchor seq 3 is missing") as raised:
        call_command("verify_audit_chain", "--anchor", head)
    assert raised.value.returncode == 1
    with pytest.raises(CommandError, match="SEQ:HASH"):
        call_command("verify_audit_chain", "--anchor", "yesterday")


def test_an_empty_chain_verifies() -> None:
    assert verify_chain() == (0, None)


def test_a_changed_hashed_column_is_the_first_broken_link() -> None:
    events = [_record() for _ in range(4)]
    with _trigger_disabled():
        _sql("UPDATE gdpr_auditevent SET metadata = '{\"seats\": 30}' WHERE id = %s", [events[1].pk])

    checked, broken = verify_chain()

    assert checked == 1
    assert broken is not None
    assert (broken.seq, broken.event_id) == (2, str(events[1].pk))
    assert "hash" in broken.reason


def test_the_command_reports_the_first_broken_link_and_exits_non_zero() -> None:
    events = [_record() for _ in range(3)]
    with _trigger_disabled():
        _sql("UPDATE gdpr_auditevent SET target_id = 'fam_2' WHERE id = %s", [events[2].pk])

    with pytest.raises(CommandError, match="seq 3") as raised:
        call_command("verify_audit_chain")

    assert raised.value.returncode != 0


def test_a_changed_actor_breaks_the_hash_but_changed_side_data_does_not() -> None:
    events = [_record() for _ in range(2)]
    with _trigger_disabled():
        _sql("UPDATE gdpr_auditevent SET actor_id = %s WHERE id = %s", [pseudonym_for(BOB), events[0].pk])

    _, broken = verify_chain()

    assert broken is not None
    assert broken.seq == 1
    assert "hash" in broken.reason
    # The trade-off of keeping people out of the chain: their side data is not tamper-evident.
    _sql("SET CONSTRAINTS ALL IMMEDIATE", [])  # no foreign-key check left pending: the table is altered next
    _sql("ALTER TABLE gdpr_auditeventpersonal DISABLE TRIGGER gdpr_auditeventpersonal_no_update", [])
    _sql("UPDATE gdpr_auditeventpersonal SET ip = '192.0.2.1' WHERE event_id = %s", [events[1].pk])
    _sql("ALTER TABLE gdpr_auditeventpersonal ENABLE TRIGGER gdpr_auditeventpersonal_no_update", [])
    assert verify_chain()[1] == broken


def test_a_rehashed_forgery_breaks_the_next_link() -> None:
    events = [_record() for _ in range(3)]
    with _trigger_disabled():
        _sql("UPDATE gdpr_auditevent SET target_id = 'fam_9' WHERE id = %s", [events[1].pk])
        forged = AuditEvent.objects.get(pk=events[1].pk)
        _sql("UPDATE gdpr_auditevent SET hash = %s WHERE id = %s", [event_hash(forged), events[1].pk])

    _, broken = verify_chain()

    assert broken is not None
    assert broken.seq == 3
    assert "prev_hash" in broken.reason


def test_a_deleted_event_is_a_gap() -> None:
    events = [_record() for _ in range(3)]
    with _trigger_disabled():
        _delete_event("id = %s", [events[1].pk])

    _, broken = verify_chain()

    assert broken is not None
    assert broken.seq == 3


# --- erasure -------------------------------------------------------------------------------------------------


def test_erasing_a_user_deletes_their_side_data_and_the_chain_still_verifies() -> None:
    alice_events = [_record(ALICE) for _ in range(3)]
    bob_event = _record(BOB)
    chain_before = list(AuditEvent.objects.order_by("seq").values())

    erased = _erase(ALICE)

    assert erased == 3
    assert not AuditEventPersonal.objects.filter(event__in=alice_events).exists()
    for event in AuditEvent.objects.filter(pk__in=[e.pk for e in alice_events]):
        assert (event.actor_id, event.metadata) == (pseudonym_for(ALICE), {"seats": 3})  # the chain's part stays
    bob = AuditEventPersonal.objects.get(event=bob_event)
    assert (bob.ip, bob.metadata) == ("198.51.100.7", {"email": "member@example.com"})
    assert list(AuditEvent.objects.order_by("seq").values())[:4] == chain_before  # nothing updated
    assert not AuditEvent.objects.filter(actor_id=ALICE).exists()
    assert AuditEvent.objects.filter(action="audit.personal_erased", target_id=pseudonym_for(ALICE)).count() == 1
    assert _all_sealed() == 1  # the erasure's own event
    assert verify_chain() == (5, None)


def test_after_erasure_a_tampered_hashed_column_is_still_caught() -> None:
    events = [_record(ALICE) for _ in range(2)]
    _erase(ALICE)
    with _trigger_disabled():
        _sql("UPDATE gdpr_auditevent SET action = 'family.member_removed' WHERE id = %s", [events[0].pk])

    _, broken = verify_chain()

    assert broken is not None
    assert broken.seq == 1


def test_the_former_pseudonymisation_flag_opens_nothing() -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config('jia.audit_pseudonymise', 'on', true)", [])
        _sql("UPDATE gdpr_auditevent SET actor_id = 'x' WHERE id = %s", [event.pk])


@pytest.mark.parametrize("column", [field.column for field in AuditEvent._meta.concrete_fields])
def test_the_database_refuses_an_update_of_every_column_even_to_the_same_value(column: str) -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql(f'UPDATE gdpr_auditevent SET "{column}" = "{column}" WHERE id = %s', [event.pk])  # noqa: S608


def test_erasure_never_deletes_an_event() -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("DELETE FROM gdpr_auditevent WHERE id = %s", [event.pk])
    _erase(ALICE)
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_side_data_can_be_deleted_but_never_changed() -> None:
    mine, other = _record(ALICE), _record(BOB)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("UPDATE gdpr_auditeventpersonal SET ip = NULL WHERE event_id = %s", [other.pk])
    _erase(ALICE)

    assert list(AuditEventPersonal.objects.values_list("event_id", flat=True)) == [other.pk]
    assert not AuditEventPersonal.objects.filter(event=mine).exists()


# --- concurrency --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_on_their_own_connections_make_one_unbroken_chain() -> None:
    writers, per_writer = 8, 15

    outcomes = race(*[lambda n=n: _write(n, per_writer) for n in range(writers)], _all_sealed, _all_sealed)

    assert raised(outcomes) == []
    _all_sealed()  # what the racing sealers did not see committed yet
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    assert verify_chain() == (writers * per_writer, None)


@pytest.mark.django_db(transaction=True)
def test_two_sealers_racing_seal_each_row_once() -> None:
    _write(0, 40)

    outcomes = race(*[lambda: audit_seal_pending(batch_size=7) for _ in range(6)])

    assert raised(outcomes) == []
    assert sum(outcomes) == 40  # 6 batches of 7 at most: every row once, none twice
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 41))
    assert verify_chain() == (40, None)


def test_sealing_again_changes_nothing() -> None:
    events = [_record() for _ in range(3)]
    chain_before = list(AuditEvent.objects.order_by("seq").values())

    assert audit_seal_pending() == 0

    assert list(AuditEvent.objects.order_by("seq").values()) == chain_before
    assert [event.seq for event in events] == [1, 2, 3]


def test_unsealed_events_are_pending_not_broken(capsys: pytest.CaptureFixture[str]) -> None:
    _record()
    _record()
    _append()

    assert verify_chain() == (2, None)
    assert pending_count() == 1
    call_command("verify_audit_chain")  # seals what is pending first
    assert "3 events verified" in capsys.readouterr().out
    assert pending_count() == 0


def test_sealing_cannot_rewrite_the_content_of_a_row() -> None:
    event = _append()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql(
            "UPDATE gdpr_auditevent SET seq = 1, prev_hash = %s, hash = %s, target_id = 'fam_2' WHERE id = %s",
            ["0" * 64, "f" * 64, event.pk],
        )
    with pytest.raises(DatabaseError), transaction.atomic():  # half sealed: the check constraint
        _sql("UPDATE gdpr_auditevent SET seq = 1 WHERE id = %s", [event.pk])


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_after_a_sealed_batch_is_chained_in_a_later_one() -> None:
    # given: an event appended (earlier occurred_at) in a transaction still open while another commits
    appended, sealed = threading.Event(), threading.Event()

    def slow_writer() -> AuditEvent:
        with transaction.atomic():
            event = record(action=AuditAction.ORDER_CREATED, actor_type=ActorType.SYSTEM, target_id="slow")
            appended.set()
            assert sealed.wait(timeout=60)
        return event

    def fast_writer_then_seal() -> int:
        assert appended.wait(timeout=60)
        _write(1, 1)
        count = _all_sealed()
        sealed.set()
        return count

    slow, sealed_first = race(slow_writer, fast_writer_then_seal)

    # when: the sealer runs again
    assert sealed_first == 1
    assert _all_sealed() == 1

    # then: the late one follows, by sealing order, and the chain holds
    late = AuditEvent.objects.get(pk=slow.pk)
    first = AuditEvent.objects.get(seq=1)
    assert (first.target_id, late.seq, late.prev_hash) == ("1-0", 2, first.hash)
    assert late.occurred_at < first.occurred_at
    assert verify_chain() == (2, None)
