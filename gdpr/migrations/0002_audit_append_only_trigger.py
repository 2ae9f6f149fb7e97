"""The audit trail is append-only in the database too, whatever the ORM does.

PostgreSQL: a row trigger refuses every DELETE and every UPDATE, except the one controlled update path
(gdpr.services.audit_pseudonymise_actor), which sets the transaction-local `jia.audit_pseudonymise` to
'on' and may then only blank the personal columns and the salt: a hashed column that changes is refused
even then. SQLite (development): the same rule without the session flag.
"""

from django.db import migrations

HASHED_COLUMNS = (
    "id", "seq", "occurred_at", "actor_type", "action", "target_type", "target_id", "request_id",
    "metadata", "personal_digest", "prev_hash", "hash",
)
_UNCHANGED = " AND ".join(f"NEW.{column} IS NOT DISTINCT FROM OLD.{column}" for column in HASHED_COLUMNS)
_CHANGED = " OR ".join(f"NEW.{column} IS NOT OLD.{column}" for column in HASHED_COLUMNS)

POSTGRES_FORWARD = f"""
CREATE OR REPLACE FUNCTION gdpr_auditevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'gdpr_auditevent is append-only: DELETE refused';
    END IF;
    IF coalesce(current_setting('jia.audit_pseudonymise', true), '') = 'on'
       AND {_UNCHANGED}
       AND NEW.personal_salt = '' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'gdpr_auditevent is append-only: UPDATE refused';
END;
$$;
CREATE TRIGGER gdpr_auditevent_append_only
    BEFORE UPDATE OR DELETE ON gdpr_auditevent
    FOR EACH ROW EXECUTE FUNCTION gdpr_auditevent_append_only();
"""
POSTGRES_BACKWARD = """
DROP TRIGGER IF EXISTS gdpr_auditevent_append_only ON gdpr_auditevent;
DROP FUNCTION IF EXISTS gdpr_auditevent_append_only();
"""
SQLITE_FORWARD = [
    "CREATE TRIGGER gdpr_auditevent_no_delete BEFORE DELETE ON gdpr_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'gdpr_auditevent is append-only: DELETE refused'); END;",
    f"CREATE TRIGGER gdpr_auditevent_no_update BEFORE UPDATE ON gdpr_auditevent "
    f"WHEN {_CHANGED} OR NEW.personal_salt != '' "
    "BEGIN SELECT RAISE(ABORT, 'gdpr_auditevent is append-only: UPDATE refused'); END;",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_delete;",
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_update;",
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
        schema_editor.execute(POSTGRES_BACKWARD)
    elif vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("gdpr", "0001_audit_event")]

    operations = [migrations.RunPython(forward, backward)]
