"""The hash chain: tampering is found, pseudonymisation is not tampering, concurrent writers make one chain."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory

from gdpr.audit import ActorType, AuditAction, AuditEvent, event_hash, record, verify_chain
from gdpr.services import PSEUDONYMISE_FLAG, audit_pseudonymise_actor
from tests.support.races import race, raised

pytestmark = pytest.mark.django_db

ALICE, BOB = str(uuid.uuid4()), str(uuid.uuid4())


def _record(actor_id: str = ALICE, **metadata: object) -> AuditEvent:
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
        _sql("DELETE FROM gdpr_auditevent WHERE seq = 3", [])  # the newest row: no link breaks

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


def test_a_changed_personal_column_breaks_its_digest() -> None:
    events = [_record() for _ in range(2)]
    with _trigger_disabled():
        _sql("UPDATE gdpr_auditevent SET ip = '192.0.2.1' WHERE id = %s", [events[0].pk])

    _, broken = verify_chain()

    assert broken is not None
    assert broken.seq == 1
    assert "digest" in broken.reason


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
        _sql("DELETE FROM gdpr_auditevent WHERE id = %s", [events[1].pk])

    _, broken = verify_chain()

    assert broken is not None
    assert broken.seq == 3


# --- pseudonymisation --------------------------------------------------------------------------------------


def test_pseudonymising_an_actor_blanks_their_personal_data_and_the_chain_still_verifies() -> None:
    alice_events = [_record(ALICE) for _ in range(3)]
    bob_event = _record(BOB)

    changed = audit_pseudonymise_actor(actor_id=ALICE, pseudonym="erased-7f3a")

    assert changed == 3
    for event in AuditEvent.objects.filter(pk__in=[e.pk for e in alice_events]):
        assert (event.actor_id, event.ip, event.user_agent, event.personal) == ("erased-7f3a", None, "", {})
        assert event.personal_salt == ""
        assert event.pseudonymised_at is not None
        assert event.metadata == {"seats": 3}  # non-personal content stays
    bob = AuditEvent.objects.get(pk=bob_event.pk)
    assert (bob.actor_id, bob.ip, bob.personal) == (BOB, "198.51.100.7", {"email": "member@example.com"})
    assert not AuditEvent.objects.filter(actor_id=ALICE).exists()
    assert AuditEvent.objects.filter(action="audit.pseudonymised").count() == 1
    assert verify_chain() == (5, None)


def test_after_pseudonymisation_a_tampered_hashed_column_is_still_caught() -> None:
    events = [_record(ALICE) for _ in range(2)]
    audit_pseudonymise_actor(actor_id=ALICE, pseudonym="erased-1")
    with _trigger_disabled():
        _sql("UPDATE gdpr_auditevent SET action = 'family.member_removed' WHERE id = %s", [events[0].pk])

    _, broken = verify_chain()

    assert broken is not None
    assert broken.seq == 1


def test_the_pseudonymisation_flag_does_not_let_a_hashed_column_change() -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config(%s, 'on', true)", [PSEUDONYMISE_FLAG])
        _sql("UPDATE gdpr_auditevent SET personal_salt = '', target_id = 'x' WHERE id = %s", [event.pk])


def test_the_pseudonymisation_flag_requires_the_salt_to_go() -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config(%s, 'on', true)", [PSEUDONYMISE_FLAG])
        _sql("UPDATE gdpr_auditevent SET ip = NULL WHERE id = %s", [event.pk])


def test_the_pseudonymisation_flag_never_allows_a_delete() -> None:
    event = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config(%s, 'on', true)", [PSEUDONYMISE_FLAG])
        _sql("DELETE FROM gdpr_auditevent WHERE id = %s", [event.pk])


def test_the_flag_is_closed_again_after_pseudonymising_inside_a_longer_transaction() -> None:
    other = _record(BOB)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _record(ALICE)
        audit_pseudonymise_actor(actor_id=ALICE, pseudonym="erased-2")
        _sql("UPDATE gdpr_auditevent SET ip = NULL, personal_salt = '' WHERE id = %s", [other.pk])


def test_pseudonymise_needs_a_different_pseudonym() -> None:
    with pytest.raises(ValueError):
        audit_pseudonymise_actor(actor_id=ALICE, pseudonym=ALICE)


# --- concurrency --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_on_their_own_connections_make_one_unbroken_chain() -> None:
    writers, per_writer = 8, 15

    def write(n: int) -> None:
        for i in range(per_writer):
            with transaction.atomic():
                record(
                    action=AuditAction.PAYMENT_RECORDED,
                    actor_type=ActorType.PROVIDER,
                    actor_id="stripe",
                    target_id=f"{n}-{i}",
                )

    outcomes = race(*[lambda n=n: write(n) for n in range(writers)])

    assert raised(outcomes) == []
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    assert verify_chain() == (writers * per_writer, None)
