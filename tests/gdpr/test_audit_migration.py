"""The migration that keeps people out of the audit chain: it converts a trail written by the code before
it (audit_trail_before_0006.json: rows recorded, and partly pseudonymised, by that code) and re-chains it,
or refuses a chain that is already broken."""

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from gdpr.audit import GENESIS_HASH, AuditEvent, AuditEventPersonal, verify_chain
from gdpr.registry import pseudonym_for

pytestmark = pytest.mark.django_db(transaction=True)  # migrations run in their own transactions

OLD_TRAIL: list[dict[str, Any]] = json.loads((Path(__file__).parent / "audit_trail_before_0006.json").read_text())
BOB = "68569d36-99a6-4d82-99ab-9584a1d04ff7"  # a live user in the old trail (Alice's rows were erased)
ERASED_ALICE = "pseudo_d75346c6091c661f7655b449"


def _executor() -> MigrationExecutor:
    return MigrationExecutor(connection)


def _this_migration() -> tuple[str, str]:
    names = _executor().loader.disk_migrations
    return next(key for key in names if key[0] == "gdpr" and key[1].endswith("_audit_personal_side_table"))


@pytest.fixture
def old_schema() -> Iterator[Any]:
    """The database just before the migration (its historical models); back to the latest after the test."""
    executor = _executor()
    before = [dep for dep in executor.loader.get_migration(*_this_migration()).dependencies if dep[0] == "gdpr"]
    executor.migrate(before)
    try:
        yield executor.loader.project_state(before).apps
    finally:
        executor = _executor()
        if _this_migration() not in executor.loader.applied_migrations:
            with connection.cursor() as cursor:  # a trail the migration refused: it never ran
                cursor.execute("TRUNCATE gdpr_auditevent")
        executor.migrate(executor.loader.graph.leaf_nodes())


def _insert(apps: Any, rows: list[dict[str, Any]]) -> None:
    old_event = apps.get_model("gdpr", "AuditEvent")
    for row in rows:
        moments = {
            key: datetime.fromisoformat(row[key]) if row[key] else None for key in ("occurred_at", "pseudonymised_at")
        }
        old_event.objects.create(**{**row, **moments})


def test_an_old_trail_is_converted_and_re_chained(old_schema: Any) -> None:
    _insert(old_schema, OLD_TRAIL)

    _executor().migrate([_this_migration()])

    assert verify_chain() == (5, None)
    events = {event.seq: event for event in AuditEvent.objects.all()}
    assert [(str(events[row["seq"]].id), events[row["seq"]].action) for row in OLD_TRAIL] == [
        (row["id"], row["action"]) for row in OLD_TRAIL
    ]
    assert events[1].prev_hash == GENESIS_HASH
    assert not {event.hash for event in events.values()} & {row["hash"] for row in OLD_TRAIL}  # hashed anew
    # Ids in hashed columns: pseudonyms, those erased before kept as they were.
    assert (events[1].actor_id, events[1].metadata["owner_user_id"]) == (ERASED_ALICE, ERASED_ALICE)
    assert events[3].target_id == ERASED_ALICE
    assert events[2].actor_id == pseudonym_for(BOB)
    assert (events[4].target_id, events[4].metadata) == (
        pseudonym_for(BOB),
        {"added": ["hd"], "user_id": pseudonym_for(BOB)},
    )
    assert BOB not in str(list(AuditEvent.objects.values()))
    # Personal columns: in the side table.
    side = {row.event.seq: (row.ip, row.user_agent, row.metadata) for row in AuditEventPersonal.objects.all()}
    assert side == {2: ("198.51.100.9", "app/1", {}), 5: ("198.51.100.9", "app/1", {"username": "fiona"})}
    # And the trail refuses every change from now on.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE gdpr_auditevent SET request_id = request_id WHERE seq = 1")


def test_a_broken_old_chain_is_refused_rather_than_re_chained(old_schema: Any) -> None:
    tampered = copy.deepcopy(OLD_TRAIL)
    tampered[3]["metadata"]["added"] = ["4k"]
    _insert(old_schema, tampered)

    with pytest.raises(RuntimeError, match="audit chain broken at seq 4"):
        _executor().migrate([_this_migration()])

    old_event = old_schema.get_model("gdpr", "AuditEvent")
    assert list(old_event.objects.order_by("seq").values_list("hash", flat=True)) == [row["hash"] for row in OLD_TRAIL]
