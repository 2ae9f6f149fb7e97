"""Audit rows are appended unsealed and chained later (gdpr/audit.py): seq, prev_hash and hash become
nullable, set together or not at all, and the append-only trigger now lets exactly one UPDATE through:
sealing, which fills the three chain columns of a row that has none and changes nothing else. Every other
UPDATE and every DELETE is still refused. SQLite rebuilds the table for these changes, which drops its
triggers: they are made again here, after the rebuild. Going back works only when every row is sealed.
"""

from django.db import migrations, models
from django.db.migrations.exceptions import IrreversibleError

CONTENT_COLUMNS = (
    "id", "occurred_at", "actor_type", "actor_id", "action", "target_type", "target_id", "request_id", "metadata",
)
_REFUSED = "gdpr_auditevent: ' || TG_OP || ' refused, the audit trail is append-only"
_SEALING_PG = "OLD.seq IS NULL AND NEW.seq IS NOT NULL AND " + " AND ".join(
    f"NEW.{column} IS NOT DISTINCT FROM OLD.{column}" for column in CONTENT_COLUMNS
)
_SEALING_SQLITE = "OLD.seq IS NULL AND NEW.seq IS NOT NULL AND " + " AND ".join(
    f"NEW.{column} IS OLD.{column}" for column in CONTENT_COLUMNS
)

POSTGRES_FORWARD = f"""
CREATE FUNCTION gdpr_auditevent_seal_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND {_SEALING_PG} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING MESSAGE = '{_REFUSED}';
END;
$$;
DROP TRIGGER gdpr_auditevent_append_only ON gdpr_auditevent;
CREATE TRIGGER gdpr_auditevent_append_only BEFORE UPDATE OR DELETE ON gdpr_auditevent
    FOR EACH ROW EXECUTE FUNCTION gdpr_auditevent_seal_only();
"""
POSTGRES_BACKWARD = """
DROP TRIGGER gdpr_auditevent_append_only ON gdpr_auditevent;
DROP FUNCTION gdpr_auditevent_seal_only();
CREATE TRIGGER gdpr_auditevent_append_only BEFORE UPDATE OR DELETE ON gdpr_auditevent
    FOR EACH ROW EXECUTE FUNCTION gdpr_audit_refuse_change();
"""
SQLITE_FORWARD = [
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_delete;",
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_update;",
    "CREATE TRIGGER gdpr_auditevent_no_delete BEFORE DELETE ON gdpr_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'gdpr_auditevent: DELETE refused, the audit trail is append-only'); END;",
    f"CREATE TRIGGER gdpr_auditevent_no_update BEFORE UPDATE ON gdpr_auditevent WHEN NOT ({_SEALING_SQLITE}) "
    "BEGIN SELECT RAISE(ABORT, 'gdpr_auditevent: UPDATE refused, the audit trail is append-only'); END;",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_delete;",
    "DROP TRIGGER IF EXISTS gdpr_auditevent_no_update;",
    "CREATE TRIGGER gdpr_auditevent_no_delete BEFORE DELETE ON gdpr_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'gdpr_auditevent: DELETE refused, the audit trail is append-only'); END;",
    "CREATE TRIGGER gdpr_auditevent_no_update BEFORE UPDATE ON gdpr_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'gdpr_auditevent: UPDATE refused, the audit trail is append-only'); END;",
]


def _run(schema_editor, *, postgresql, sqlite):
    vendor = schema_editor.connection.vendor
    for statement in postgresql if vendor == "postgresql" else sqlite if vendor == "sqlite" else []:
        schema_editor.execute(statement)


def triggers_create(apps, schema_editor):
    _run(schema_editor, postgresql=[POSTGRES_FORWARD], sqlite=SQLITE_FORWARD)


def unsealed_refuse(apps, schema_editor):
    if apps.get_model("gdpr", "AuditEvent").objects.filter(seq__isnull=True).exists():
        raise IrreversibleError("unsealed audit events: seal them first (manage.py verify_audit_chain)")


def triggers_restore(apps, schema_editor):
    _run(schema_editor, postgresql=[POSTGRES_BACKWARD], sqlite=SQLITE_BACKWARD)


class Migration(migrations.Migration):

    dependencies = [
        ('gdpr', '0008_ops_role_group'),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, triggers_restore),  # going back: after the rebuild
        migrations.AlterField(
            model_name='auditevent',
            name='hash',
            field=models.CharField(editable=False, max_length=64, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='prev_hash',
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='seq',
            field=models.BigIntegerField(editable=False, null=True, unique=True),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(condition=models.Q(('seq__isnull', True)), fields=['occurred_at', 'id'], name='audit_unsealed_idx'),
        ),
        migrations.AddConstraint(
            model_name='auditevent',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('hash__isnull', True), ('prev_hash__isnull', True), ('seq__isnull', True)), models.Q(('hash__isnull', False), ('prev_hash__isnull', False), ('seq__isnull', False)), _connector='OR'), name='audit_sealed_whole'),
        ),
        migrations.RunPython(triggers_create, unsealed_refuse),
    ]
