"""Person ids in hashed audit columns (a "user" target, metadata such as user_id): written as the
person's pseudonym, so erasure deletes only side data, and the hash chain verifies before and after."""

import hashlib
import uuid
from datetime import UTC
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory

from gdpr.audit import (
    ActorType,
    AuditAction,
    AuditEvent,
    AuditEventPersonal,
    audit_seal_pending,
    canonical_json,
    event_hash,
    record,
    verify_chain,
)
from gdpr.registry import DataSubject, pseudonym_for
from gdpr.services import audit_personal_erase

pytestmark = pytest.mark.django_db

ALICE, OWNER = str(uuid.uuid4()), str(uuid.uuid4())
PSEUDONYM, OWNER_PSEUDONYM = pseudonym_for(ALICE), pseudonym_for(OWNER)


def _erase_alice(*emails: str) -> int:
    return audit_personal_erase(
        subject=DataSubject(user_id=uuid.UUID(ALICE), pseudonym=PSEUDONYM, emails=frozenset(emails))
    )


def _record(**fields: Any) -> AuditEvent:
    with transaction.atomic():
        event = record(**{"action": AuditAction.ENTITLEMENTS_CHANGED, "actor_type": ActorType.SYSTEM, **fields})
    audit_seal_pending()  # as beat's sealer would a moment later
    event.refresh_from_db()
    return event


def _sql(statement: str, params: list[object]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _trail_about_alice() -> dict[str, AuditEvent]:
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.9", HTTP_USER_AGENT="owner-app/1")
    return {
        "target": _record(target_type="user", target_id=ALICE, metadata={"added": ["hd"], "removed": []}),
        "member": _record(
            action=AuditAction.FAMILY_MEMBER_REMOVED,
            actor_type=ActorType.USER,
            actor_id=OWNER,
            target_type="family_group",
            target_id="fam_1",
            metadata={"user_id": ALICE, "reason": "removed"},
            request=request,
        ),
        "invited": _record(
            action=AuditAction.FAMILY_INVITATION_CREATED,
            actor_type=ActorType.USER,
            actor_id=OWNER,
            target_type="family_group",
            target_id="fam_1",
            metadata={"invitee_email": "alice@example.com", "invitation_id": "inv_1"},
        ),
        "own": _record(
            action=AuditAction.FAMILY_CREATED,
            actor_type=ActorType.USER,
            actor_id=ALICE,
            target_type="family_group",
            target_id="fam_2",
            metadata={"owner_user_id": ALICE, "seats": 3},
            request=request,
        ),
        "other": _record(target_type="user", target_id=OWNER, metadata={"user_id": OWNER}),
    }


def test_person_ids_are_pseudonyms_where_readers_expect_them() -> None:
    trail = _trail_about_alice()

    assert trail["target"].target_id == PSEUDONYM
    assert trail["member"].metadata == {"user_id": PSEUDONYM, "reason": "removed"}
    assert trail["own"].metadata == {"owner_user_id": PSEUDONYM, "seats": 3}
    assert (trail["own"].actor_id, trail["member"].actor_id) == (PSEUDONYM, OWNER_PSEUDONYM)
    assert AuditEvent.objects.filter(target_type="user", target_id=PSEUDONYM).count() == 1
    assert ALICE not in str(list(AuditEvent.objects.values()))
    assert verify_chain() == (5, None)


def test_a_changed_reference_breaks_the_hash() -> None:
    trail = _trail_about_alice()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE gdpr_auditevent DISABLE TRIGGER gdpr_auditevent_append_only")
    try:
        _sql("UPDATE gdpr_auditevent SET target_id = %s WHERE id = %s", [OWNER_PSEUDONYM, trail["target"].pk])
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE gdpr_auditevent ENABLE TRIGGER gdpr_auditevent_append_only")

    _, broken = verify_chain()

    assert broken is not None and broken.seq == trail["target"].seq
    assert "hash" in broken.reason


def test_erasing_a_subject_deletes_their_side_data_and_the_chain_still_verifies() -> None:
    trail = _trail_about_alice()
    chain_before = list(AuditEvent.objects.order_by("seq").values())

    erased = _erase_alice("Alice@Example.com")

    assert erased == 2  # her own event's ip and user agent, and her address in the owner's invitation
    assert not AuditEventPersonal.objects.filter(event__in=[trail["own"], trail["invited"]]).exists()
    owners = AuditEventPersonal.objects.get(event=trail["member"])
    assert (owners.ip, owners.user_agent) == ("198.51.100.9", "owner-app/1")  # the owner's, kept
    assert list(AuditEvent.objects.order_by("seq").values())[:5] == chain_before  # the chain is not touched
    everything = list(AuditEvent.objects.values()) + list(AuditEventPersonal.objects.values())
    assert ALICE not in str(everything) and "alice@example.com" not in str(everything).lower()
    assert audit_seal_pending() == 1  # the audit.personal_erased event
    assert verify_chain() == (6, None)
    call_command("verify_audit_chain")


def test_after_erasure_a_tampered_hashed_column_is_still_caught() -> None:
    trail = _trail_about_alice()
    _erase_alice()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE gdpr_auditevent DISABLE TRIGGER gdpr_auditevent_append_only")
    try:
        _sql(
            "UPDATE gdpr_auditevent SET metadata = %s WHERE id = %s",
            ['{"user_id": "x", "reason": "left"}', trail["member"].pk],
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE gdpr_auditevent ENABLE TRIGGER gdpr_auditevent_append_only")

    _, broken = verify_chain()

    assert broken is not None and broken.seq == trail["member"].seq


def test_the_database_lets_no_reference_change_with_or_without_the_former_flag() -> None:
    trail = _trail_about_alice()

    # a reference in metadata
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql(
            "UPDATE gdpr_auditevent SET metadata = %s WHERE id = %s",
            ['{"user_id": "x", "reason": "removed"}', trail["member"].pk],
        )
    # a person's target
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("UPDATE gdpr_auditevent SET target_id = 'x' WHERE id = %s", [trail["target"].pk])
    # the same, with the flag that used to open the pseudonymisation path
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config('jia.audit_pseudonymise', 'on', true)", [])
        _sql("UPDATE gdpr_auditevent SET target_id = 'x' WHERE id = %s", [trail["target"].pk])


def test_the_hash_covers_exactly_the_row_and_nothing_personal() -> None:
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.9", HTTP_USER_AGENT="owner-app/1")
    event = _record(
        actor_type=ActorType.USER,
        actor_id=ALICE,
        target_type="user",
        target_id=ALICE,
        metadata={"user_id": ALICE, "email": "alice@example.com", "amount": 100},
        request=request,
    )
    hashed = {  # every column of the row but the hash itself
        "seq": event.seq,
        "id": str(event.id),
        "occurred_at": event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": event.request_id,
        "metadata": event.metadata,
        "prev_hash": event.prev_hash,
    }

    assert event.hash == event_hash(event) == hashlib.sha256(canonical_json(hashed)).hexdigest()
    assert set(hashed) | {"hash"} == {field.attname for field in AuditEvent._meta.concrete_fields}
    for personal in (ALICE, "alice@example.com", "198.51.100.9", "owner-app/1"):
        assert personal not in str(hashed)
