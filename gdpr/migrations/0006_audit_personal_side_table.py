"""People out of the audit chain: personal data moves to AuditEventPersonal, user ids in hashed columns
become pseudonyms, and the trigger refuses every UPDATE and DELETE of an event (gdpr/audit.py).

Converting a row changes its hash, so the chain is built again here (re-chained), in seq order:
- the old chain is verified first, under the old rules; a broken one stops the migration, because
  re-chaining it would hide the break;
- ip, user agent and personal metadata move to the side table; a user actor's id, a "user" target's id
  and user_id-like metadata become the user's pseudonym, as `record` writes them now;
- every row is hashed again. Anchors (SEQ:HASH) printed before this migration no longer match: print a
  new one after it (`manage.py verify_audit_chain`).
Both sets of hash rules are written out here as they stand at this migration, so later changes to
gdpr/audit.py do not change what it does. Going back works only with an empty trail.

The side table's rows are never updated either (a trigger), only deleted by erasure. On SQLite
(development) a later migration that rebuilds either table drops its triggers: make them again there.
"""

import hashlib
import importlib
import json
from datetime import UTC

import django.core.serializers.json
import django.db.models.deletion
from django.core.serializers.json import DjangoJSONEncoder
from django.db import migrations, models
from django.db.migrations.exceptions import IrreversibleError

from gdpr.registry import PSEUDONYM_PREFIX, pseudonym_for

_trigger_0002 = importlib.import_module("gdpr.migrations.0002_audit_append_only_trigger")
_trigger_0004 = importlib.import_module("gdpr.migrations.0004_audit_personal_refs")

GENESIS_HASH = "0" * 64
CHAIN_LOCK_KEY = 0x4A1A_A0D1  # gdpr.audit.AUDIT_CHAIN_LOCK_KEY: no append while the chain is rebuilt
PERSONAL_TARGET_TYPES = {"user"}
PERSONAL_REFERENCE_KEYS = {"user_id", "owner_user_id", "member_user_id", "invited_by_user_id", "accepted_by_user_id"}


def _canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder).encode()


def _timestamp(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- The rules up to this migration: personal columns behind a salted digest, references masked ---------


def _old_break(event):
    """Why the row does not match its personal digest or its hash under the old rules; None if it does."""
    refs = list(event.personal_refs or [])
    values = {ref: event.target_id if ref == "target_id" else event.metadata.get(ref[len("metadata.") :]) for ref in refs}
    if event.personal_salt:
        committed = {"actor_id": event.actor_id, "ip": event.ip or "", "user_agent": event.user_agent}
        committed["personal"] = event.personal
        if refs:
            committed["refs"] = values
        digest = hashlib.sha256(bytes.fromhex(event.personal_salt) + _canonical_json(committed)).hexdigest()
        if digest != event.personal_digest:
            return "personal columns do not match their digest"
    masked = {ref[len("metadata.") :] for ref in refs if ref.startswith("metadata.")}
    content = {
        "seq": event.seq,
        "id": str(event.id),
        "occurred_at": _timestamp(event.occurred_at),
        "actor_type": event.actor_type,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": "" if "target_id" in refs else event.target_id,
        "request_id": event.request_id,
        "metadata": {key: "" if key in masked else value for key, value in event.metadata.items()},
        "personal_digest": event.personal_digest,
        "prev_hash": event.prev_hash,
    }
    if refs:
        content["personal_refs"] = refs
    if hashlib.sha256(_canonical_json(content)).hexdigest() != event.hash:
        return "content does not match its hash"
    return None


# --- The rules from this migration on: pseudonyms in the row, every column hashed ----------------------------


def _pseudonymous(user_id, seq):
    if not user_id or user_id.startswith(PSEUDONYM_PREFIX):  # erased already
        return user_id
    try:
        return pseudonym_for(user_id)
    except ValueError:
        raise RuntimeError(f"audit event seq {seq}: a user id that is not a UUID; fix it by hand first") from None


def _new_hash(event):
    content = {
        "seq": event.seq,
        "id": str(event.id),
        "occurred_at": _timestamp(event.occurred_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": event.request_id,
        "metadata": event.metadata,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(_canonical_json(content)).hexdigest()


def rechain(apps, schema_editor):
    AuditEvent = apps.get_model("gdpr", "AuditEvent")
    AuditEventPersonal = apps.get_model("gdpr", "AuditEventPersonal")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
    seq, old_prev, new_prev = 0, GENESIS_HASH, GENESIS_HASH
    while batch := list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq")[:1000]):
        for event in batch:
            if event.seq != seq + 1:
                reason = f"expected seq {seq + 1} (a row is missing or out of place)"
            elif event.prev_hash != old_prev:
                reason = "prev_hash does not match the previous row's hash"
            else:
                reason = _old_break(event)
            if reason:
                raise RuntimeError(f"audit chain broken at seq {event.seq} (event {event.id}): {reason}; not re-chained")
            seq, old_prev = event.seq, event.hash
            if event.ip or event.user_agent or event.personal:
                AuditEventPersonal.objects.create(
                    event_id=event.id, ip=event.ip, user_agent=event.user_agent, metadata=event.personal
                )
            if event.actor_type == "user":
                event.actor_id = _pseudonymous(event.actor_id, seq)
            if event.target_type in PERSONAL_TARGET_TYPES:
                event.target_id = _pseudonymous(event.target_id, seq)
            event.metadata = {
                key: _pseudonymous(value, seq) if key in PERSONAL_REFERENCE_KEYS and isinstance(value, str) else value
                for key, value in event.metadata.items()
            }
            event.prev_hash = new_prev
            event.hash = new_prev = _new_hash(event)
            AuditEvent.objects.filter(pk=event.pk).update(
                actor_id=event.actor_id,
                target_id=event.target_id,
                metadata=event.metadata,
                prev_hash=event.prev_hash,
                hash=event.hash,
            )
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # check the new rows now, before the ALTER TABLEs


# --- Triggers ---------------------------------------------------------------------------------------------

POSTGRES_FORWARD = """
CREATE FUNCTION gdpr_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ': ' || TG_OP || ' refused, the audit trail is append-only';
END;
$$;
CREATE TRIGGER gdpr_auditevent_append_only BEFORE UPDATE OR DELETE ON gdpr_auditevent
    FOR EACH ROW EXECUTE FUNCTION gdpr_audit_refuse_change();
CREATE TRIGGER gdpr_auditeventpersonal_no_update BEFORE UPDATE ON gdpr_auditeventpersonal
    FOR EACH ROW EXECUTE FUNCTION gdpr_audit_refuse_change();
"""
POSTGRES_BACKWARD = """
DROP TRIGGER IF EXISTS gdpr_auditevent_append_only ON gdpr_auditevent;
DROP TRIGGER IF EXISTS gdpr_auditeventpersonal_no_update ON gdpr_auditeventpersonal;
DROP FUNCTION IF EXISTS gdpr_audit_refuse_change();
"""
SQLITE_FORWARD = [
    f"CREATE TRIGGER {name} BEFORE {operation} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, '{table}: {operation} refused, the audit trail is append-only'); END;"
    for name, operation, table in (
        ("gdpr_auditevent_no_delete", "DELETE", "gdpr_auditevent"),
        ("gdpr_auditevent_no_update", "UPDATE", "gdpr_auditevent"),
        ("gdpr_auditeventpersonal_no_update", "UPDATE", "gdpr_auditeventpersonal"),
    )
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_delete;",
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS gdpr_auditeventpersonal_no_update;",
]


def _run(schema_editor, *, postgresql, sqlite):
    vendor = schema_editor.connection.vendor
    for statement in postgresql if vendor == "postgresql" else sqlite if vendor == "sqlite" else []:
        schema_editor.execute(statement)


def old_triggers_drop(apps, schema_editor):
    _run(schema_editor, postgresql=[_trigger_0002.POSTGRES_BACKWARD], sqlite=_trigger_0002.SQLITE_BACKWARD)


def old_triggers_restore(apps, schema_editor):
    _run(
        schema_editor,
        postgresql=[_trigger_0002.POSTGRES_FORWARD, _trigger_0004.POSTGRES_FORWARD],
        sqlite=_trigger_0004.SQLITE_FORWARD,
    )


def triggers_create(apps, schema_editor):
    _run(schema_editor, postgresql=[POSTGRES_FORWARD], sqlite=SQLITE_FORWARD)


def triggers_drop(apps, schema_editor):
    if apps.get_model("gdpr", "AuditEvent").objects.exists():
        raise IrreversibleError("the audit trail was re-chained with pseudonyms; it cannot go back (empty it first)")
    _run(schema_editor, postgresql=[POSTGRES_BACKWARD], sqlite=SQLITE_BACKWARD)


class Migration(migrations.Migration):

    dependencies = [
        ('gdpr', '0005_data_subject_requests'),
    ]

    operations = [
        migrations.RunPython(old_triggers_drop, old_triggers_restore),
        migrations.CreateModel(
            name='AuditEventPersonal',
            fields=[
                # related_name 'personal' once the old column of that name is gone (below)
                ('event', models.OneToOneField(editable=False, on_delete=django.db.models.deletion.PROTECT, primary_key=True, related_name='+', serialize=False, to='gdpr.auditevent')),
                ('ip', models.GenericIPAddressField(blank=True, null=True)),
                ('user_agent', models.CharField(blank=True, max_length=512)),
                ('metadata', models.JSONField(blank=True, default=dict, encoder=django.core.serializers.json.DjangoJSONEncoder)),
            ],
            options={
                'verbose_name': "audit event's personal data",
                'verbose_name_plural': "audit events' personal data",
            },
        ),
        migrations.RunPython(rechain, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='auditevent',
            name='ip',
        ),
        migrations.RemoveField(
            model_name='auditevent',
            name='personal',
        ),
        migrations.RemoveField(
            model_name='auditevent',
            name='personal_digest',
        ),
        migrations.RemoveField(
            model_name='auditevent',
            name='personal_refs',
        ),
        migrations.RemoveField(
            model_name='auditevent',
            name='personal_salt',
        ),
        migrations.RemoveField(
            model_name='auditevent',
            name='pseudonymised_at',
        ),
        migrations.RemoveField(
            model_name='auditevent',
            name='user_agent',
        ),
        migrations.AlterField(
            model_name='auditeventpersonal',
            name='event',
            field=models.OneToOneField(editable=False, on_delete=django.db.models.deletion.PROTECT, primary_key=True, related_name='personal', serialize=False, to='gdpr.auditevent'),
        ),
        migrations.RunPython(triggers_create, triggers_drop),
    ]
