"""Person ids in hashed columns become erasable: `personal_refs` names them (gdpr/audit.py).

The append-only trigger keeps refusing every DELETE and every UPDATE outside the pseudonymisation path;
on that path (transaction-local `jia.audit_pseudonymise` = 'on', salt blanked) it now also lets
`target_id` change when the row lists it in `personal_refs`, and `metadata` change only at the keys the
row lists there. `personal_refs` itself never changes, nor does any other hashed column.
"""

import importlib

from django.db import migrations, models

_previous = importlib.import_module("gdpr.migrations.0002_audit_append_only_trigger")

FIXED_COLUMNS = (
    "id", "seq", "occurred_at", "actor_type", "action", "target_type", "request_id",
    "personal_digest", "prev_hash", "hash", "personal_refs",
)
_UNCHANGED = " AND ".join(f"NEW.{column} IS NOT DISTINCT FROM OLD.{column}" for column in FIXED_COLUMNS)
_CHANGED = " OR ".join(f"NEW.{column} IS NOT OLD.{column}" for column in FIXED_COLUMNS)

POSTGRES_FORWARD = f"""
CREATE OR REPLACE FUNCTION gdpr_auditevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ref_keys text[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'gdpr_auditevent is append-only: DELETE refused';
    END IF;
    IF coalesce(current_setting('jia.audit_pseudonymise', true), '') = 'on'
       AND {_UNCHANGED}
       AND NEW.personal_salt = '' THEN
        ref_keys := ARRAY(
            SELECT substr(ref, 10) FROM jsonb_array_elements_text(OLD.personal_refs) AS ref
            WHERE left(ref, 9) = 'metadata.'
        );
        IF (NEW.target_id IS NOT DISTINCT FROM OLD.target_id OR OLD.personal_refs @> '["target_id"]'::jsonb)
           AND (NEW.metadata - ref_keys) IS NOT DISTINCT FROM (OLD.metadata - ref_keys) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'gdpr_auditevent is append-only: UPDATE refused';
END;
$$;
"""
# SQLite (development) rebuilds the table to add a column, which drops its triggers: both are made again.
SQLITE_FORWARD = [
    *_previous.SQLITE_BACKWARD,
    _previous.SQLITE_FORWARD[0],  # no DELETE, ever
    f"CREATE TRIGGER gdpr_auditevent_no_update BEFORE UPDATE ON gdpr_auditevent "
    f"WHEN {_CHANGED} OR NEW.personal_salt != '' "
    "OR (NEW.target_id IS NOT OLD.target_id AND instr(OLD.personal_refs, '\"target_id\"') = 0) "
    "OR (NEW.metadata IS NOT OLD.metadata AND instr(OLD.personal_refs, '\"metadata.') = 0) "
    "BEGIN SELECT RAISE(ABORT, 'gdpr_auditevent is append-only: UPDATE refused'); END;",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(_previous.POSTGRES_BACKWARD)
        schema_editor.execute(_previous.POSTGRES_FORWARD)
    elif vendor == "sqlite":
        for statement in [*_previous.SQLITE_BACKWARD, *_previous.SQLITE_FORWARD]:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("gdpr", "0003_staff_role_groups")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="personal_refs",
            field=models.JSONField(blank=True, default=list, editable=False),
        ),
        migrations.RunPython(forward, backward),
    ]
