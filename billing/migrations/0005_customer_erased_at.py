"""Customer.erased_at: set by erasure, so Stripe events arriving later about the customer are stored redacted.
Customers erased before this migration are found through their completed erasure requests (the customer's
user id is uuid5 of the request's pseudonym)."""

import uuid

from django.db import migrations, models
from django.db.models import F

# gdpr.registry.PSEUDONYM_NAMESPACE, copied: a migration must not change when the code does.
PSEUDONYM_NAMESPACE = uuid.UUID("5f0c8a3e-6b1d-4f7e-9a52-3d0b7c1e4a96")


def mark_erased_customers(apps, schema_editor):  # type: ignore[no-untyped-def]
    Customer = apps.get_model("billing", "Customer")
    DataSubjectRequest = apps.get_model("gdpr", "DataSubjectRequest")
    subjects = DataSubjectRequest.objects.filter(kind="erasure", status="completed").values_list("subject", flat=True)
    pseudonymous = [uuid.uuid5(PSEUDONYM_NAMESPACE, subject) for subject in subjects.iterator()]
    for start in range(0, len(pseudonymous), 1000):
        Customer.objects.filter(user_id__in=pseudonymous[start : start + 1000], erased_at__isnull=True).update(
            erased_at=F("updated_at")
        )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_subscription_change"),
        ("gdpr", "0008_ops_role_group"),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="erased_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(mark_erased_customers, migrations.RunPython.noop),
    ]
