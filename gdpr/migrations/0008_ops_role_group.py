"""The ops role group (payments_project.roles.Role.OPS): operators on call, who replay dead outbox messages."""

from django.db import migrations

ROLE_GROUPS = ("ops",)


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [("gdpr", "0007_data_subject_request_last_error")]

    operations = [migrations.RunPython(create_groups, remove_groups)]
