from django.db import migrations, models

OLD = "webhooks_webhookevent_customer_id_cf35f39b"  # what db_index=True named it
INDEX = models.Index(fields=["customer_id"], name="webhook_event_customer_idx")


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        # Renamed, not rebuilt (no write lock held while a big inbox is indexed again); the LIKE index
        # that db_index adds on PostgreSQL goes: no query uses it, every insert and status change kept it.
        schema_editor.execute(f"DROP INDEX IF EXISTS {OLD}_like")
        schema_editor.execute(f"ALTER INDEX IF EXISTS {OLD} RENAME TO {INDEX.name}")
    else:
        schema_editor.execute(f"DROP INDEX IF EXISTS {OLD}")
        schema_editor.add_index(apps.get_model("webhooks", "WebhookEvent"), INDEX)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER INDEX IF EXISTS {INDEX.name} RENAME TO {OLD}")
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {OLD}_like ON webhooks_webhookevent (customer_id varchar_pattern_ops)"
        )
    else:
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX.name}")
        schema_editor.execute(f"CREATE INDEX {OLD} ON webhooks_webhookevent (customer_id)")


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0005_event_dead_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="webhookevent", name="customer_id", field=models.CharField(blank=True, max_length=255)
                ),
                migrations.AddIndex(model_name="webhookevent", index=INDEX),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
