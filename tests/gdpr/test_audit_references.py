"""Person ids in hashed audit columns (a "user" target, metadata such as user_id): readable while the
person exists, erasable by pseudonymisation, and the hash chain verifies before and after."""

import hashlib
import uuid
from datetime import UTC
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory

from gdpr.audit import ActorType, AuditAction, AuditEvent, canonical_json, event_hash, record, verify_chain
from gdpr.services import PSEUDONYMISE_FLAG, audit_pseudonymise_subject

pytestmark = pytest.mark.django_db

ALICE, OWNER = str(uuid.uuid4()), str(uuid.uuid4())
PSEUDONYM = "pseudo_0123456789abcdef01234567"


def _record(**fields: Any) -> AuditEvent:
    with transaction.atomic():
        return record(**{"action": AuditAction.ENTITLEMENTS_CHANGED, "actor_type": ActorType.SYSTEM, **fields})


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


def test_person_ids_stay_where_readers_expect_them_and_are_listed_as_references() -> None:
    trail = _trail_about_alice()

    assert (trail["target"].target_id, trail["target"].personal_refs) == (ALICE, ["target_id"])
    assert trail["member"].metadata == {"user_id": ALICE, "reason": "removed"}
    assert trail["member"].personal_refs == ["metadata.user_id"]
    assert trail["own"].personal_refs == ["metadata.owner_user_id"]
    assert AuditEvent.objects.filter(target_type="user", target_id=ALICE).count() == 1
    assert verify_chain() == (5, None)


def test_a_changed_reference_breaks_the_personal_digest_while_the_person_exists() -> None:
    trail = _trail_about_alice()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE gdpr_auditevent DISABLE TRIGGER gdpr_auditevent_append_only")
    try:
        _sql("UPDATE gdpr_auditevent SET target_id = %s WHERE id = %s", [OWNER, trail["target"].pk])
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE gdpr_auditevent ENABLE TRIGGER gdpr_auditevent_append_only")

    _, broken = verify_chain()

    assert broken is not None and broken.seq == trail["target"].seq
    assert "digest" in broken.reason


def test_erasing_a_subject_replaces_their_id_everywhere_and_the_chain_still_verifies() -> None:
    trail = _trail_about_alice()

    changed = audit_pseudonymise_subject(user_id=ALICE, emails=["Alice@Example.com"], pseudonym=PSEUDONYM)

    assert changed == 4
    events = {name: AuditEvent.objects.get(pk=event.pk) for name, event in trail.items()}
    assert events["target"].target_id == PSEUDONYM
    assert events["member"].metadata == {"user_id": PSEUDONYM, "reason": "removed"}
    assert (events["member"].actor_id, events["member"].ip) == (OWNER, "198.51.100.9")  # the owner's, kept
    assert events["invited"].personal == {}  # her address, in the owner's event
    assert (events["own"].actor_id, events["own"].ip, events["own"].user_agent) == (PSEUDONYM, None, "")
    assert events["own"].metadata == {"owner_user_id": PSEUDONYM, "seats": 3}
    assert events["other"].target_id == OWNER and events["other"].personal_salt  # untouched
    everything = list(AuditEvent.objects.values_list("actor_id", "target_id", "metadata", "personal"))
    assert ALICE not in str(everything) and "alice@example.com" not in str(everything).lower()
    assert verify_chain() == (7, None)  # 5 + two audit.pseudonymised events
    call_command("verify_audit_chain")


def test_after_erasure_a_tampered_hashed_column_is_still_caught() -> None:
    trail = _trail_about_alice()
    audit_pseudonymise_subject(user_id=ALICE, emails=[], pseudonym=PSEUDONYM)
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


def test_the_database_lets_only_listed_references_change_on_the_pseudonymisation_path() -> None:
    trail = _trail_about_alice()

    # a metadata key that is not a listed reference
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config(%s, 'on', true)", [PSEUDONYMISE_FLAG])
        _sql(
            "UPDATE gdpr_auditevent SET personal_salt = '', metadata = %s WHERE id = %s",
            ['{"user_id": "x", "reason": "left"}', trail["member"].pk],
        )
    # the target of an event whose target is not a person
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config(%s, 'on', true)", [PSEUDONYMISE_FLAG])
        _sql("UPDATE gdpr_auditevent SET personal_salt = '', target_id = 'x' WHERE id = %s", [trail["member"].pk])
    # the list of references itself
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SELECT set_config(%s, 'on', true)", [PSEUDONYMISE_FLAG])
        _sql("UPDATE gdpr_auditevent SET personal_salt = '', personal_refs = '[]' WHERE id = %s", [trail["target"].pk])
    # a listed reference, without the flag
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("UPDATE gdpr_auditevent SET personal_salt = '', target_id = 'x' WHERE id = %s", [trail["target"].pk])


def test_events_without_references_hash_exactly_as_rows_written_before_references_existed() -> None:
    event = _record(target_type="payment", target_id="pay_1", metadata={"amount": 100})
    before_references = {  # the hashed content as gdpr/audit.py defined it before personal_refs
        "seq": event.seq,
        "id": str(event.id),
        "occurred_at": event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor_type": event.actor_type,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": event.request_id,
        "metadata": event.metadata,
        "personal_digest": event.personal_digest,
        "prev_hash": event.prev_hash,
    }

    assert event.personal_refs == []
    assert event.hash == event_hash(event) == hashlib.sha256(canonical_json(before_references)).hexdigest()
