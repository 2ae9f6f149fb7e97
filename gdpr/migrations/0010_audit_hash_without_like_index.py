from django.db import migrations, models


def drop_like_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    # The unique constraint stays as it is (same name); the LIKE index unique=True added on PostgreSQL goes:
    # no query uses it, and every audit insert and seal maintained it.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS gdpr_auditevent_hash_6cbb59d9_like")


def restore_like_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS gdpr_auditevent_hash_6cbb59d9_like ON gdpr_auditevent (hash varchar_pattern_ops)"
        )


class Migration(migrations.Migration):
    dependencies = [("gdpr", "0009_audit_sealed_later")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="hash",
                    field=models.CharField(editable=False, max_length=64, null=True),
                ),
                migrations.AddConstraint(
                    model_name="auditevent",
                    constraint=models.UniqueConstraint(fields=["hash"], name="gdpr_auditevent_hash_key"),
                ),
            ],
            database_operations=[migrations.RunPython(drop_like_index, restore_like_index)],
        ),
    ]
