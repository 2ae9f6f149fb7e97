"""The ops role group (payments_project.roles.Role.OPS): operators on call, who replay dead outbox messages."""

from django.db import migrations


def create_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name="ops")


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="ops").delete()


class Migration(migrations.Migration):
    dependencies = [("gdpr", "0007_data_subject_request_last_error")]

    operations = [migrations.RunPython(create_group, remove_group)]
