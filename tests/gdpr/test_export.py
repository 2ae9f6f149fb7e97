"""Export (GDPR Art. 15, 20): every row of the user from every app, as JSON and as CSV, in one zip."""

import csv
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.test import Client

from billing.models import Customer, Order, Payment, Refund, Subscription
from entitlements.models import EntitlementSnapshot, FamilyGroup, FamilyInvitation, FamilyMembership
from gdpr.models import AuditEvent, DataSubjectRequest, RequestStatus
from gdpr.registry import pseudonym_for
from tasks.models import OutboxMessage
from tests.gdpr.support import BOB_EMAIL, CAROL_EMAIL, Seeded, run_to_the_end, seed_everywhere
from tests.support.auth import bearer
from tests.support.worker import celery_worker, wait_until
from webhooks.models import WebhookEvent

ALICE = uuid.UUID("0190f1a2-7c4e-7d11-8a00-00000000a11c")
ALICE_EMAIL = "Alice.Liddell@example.com"


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _ids(rows: list[dict[str, Any]]) -> set[str]:
    return {str(row["id"]) for row in rows}


def _db_ids(queryset: Any) -> set[str]:
    return {str(pk) for pk in queryset.values_list("pk", flat=True)}


def _export(client: Client) -> Any:
    return client.post(
        "/api/v1/gdpr/exports", content_type="application/json", HTTP_AUTHORIZATION=bearer(ALICE, ALICE_EMAIL)
    )


def _archive(client: Client, request_id: str) -> zipfile.ZipFile:
    response = client.get(f"/api/v1/gdpr/exports/{request_id}/download", HTTP_AUTHORIZATION=bearer(ALICE, ALICE_EMAIL))
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/zip"
    assert "attachment" in response["Content-Disposition"]
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def assert_every_row_exported(archive: zipfile.ZipFile, seeded: Seeded) -> None:
    tables = json.loads(archive.read("data.json"))["tables"]
    customers = Customer.objects.filter(user_id=ALICE)
    groups = FamilyGroup.objects.filter(memberships__user_id=ALICE)
    expected = {
        "billing.customers": _db_ids(customers),
        "billing.orders": _db_ids(Order.objects.filter(customer__in=customers)),
        "billing.subscriptions": _db_ids(Subscription.objects.filter(customer__in=customers)),
        "billing.payments": _db_ids(Payment.objects.filter(customer__in=customers)),
        "billing.refunds": _db_ids(Refund.objects.filter(payment__customer__in=customers)),
        "billing.invoices": {str(seeded.invoice.id)},
        "billing.disputes": {str(seeded.dispute.id)},
        "entitlements.family_groups": _db_ids(groups),
        "entitlements.family_memberships": _db_ids(FamilyMembership.objects.filter(user_id=ALICE)),
        "entitlements.family_invitations": _db_ids(
            FamilyInvitation.objects.filter(invited_by_user_id=ALICE)
            | FamilyInvitation.objects.filter(email=ALICE_EMAIL.lower())
        ),
        "webhooks.stripe_events": {str(event.id) for event in seeded.events},
        "gdpr.requests": _db_ids(DataSubjectRequest.objects.filter(user_id=ALICE)),
    }
    for table, ids in expected.items():
        assert ids, f"the seed left {table} empty"
        assert _ids(tables[table]) == ids, table
    # Exact values, as the database has them.
    db_customer = _json(customers.values().get())
    assert tables["billing.customers"] == [db_customer]
    assert tables["billing.refunds"][0]["note"] == seeded.refund.note
    assert tables["billing.payments"][0]["amount"] == 1299
    assert tables["billing.invoices"][0]["hosted_invoice_url"] == seeded.invoice.hosted_invoice_url
    assert tables["billing.disputes"][0]["reason"] == "fraudulent"
    assert [row["user_id"] for row in tables["entitlements.entitlement_snapshots"]] == [str(ALICE)]
    assert {row["user_id"] for row in tables["entitlements.family_members"]} == {str(seeded.bob)}
    assert "email" not in tables["entitlements.family_members"][0]  # not someone else's address
    assert {row["email"] for row in tables["entitlements.family_invitations"]} == {
        BOB_EMAIL,
        CAROL_EMAIL,
        ALICE_EMAIL.lower(),
    }
    assert all("token_hash" not in row for row in tables["entitlements.family_invitations"])
    payloads = {row["id"]: row["payload"] for row in tables["webhooks.stripe_events"]}
    assert payloads[str(seeded.events[0].id)] == json.loads(seeded.events[0].raw_body)
    # The audit trail: what Alice did (with her ip) and what was done about her.
    events = tables["gdpr.audit_events"]
    own = AuditEvent.objects.filter(actor_id=pseudonym_for(ALICE)).exclude(action="gdpr.export.downloaded")  # this one
    about = AuditEvent.objects.filter(target_type="user", target_id=pseudonym_for(ALICE))
    invited = AuditEvent.objects.filter(personal__metadata__invitee_email=ALICE_EMAIL.lower())
    assert _ids(events) == _db_ids(own) | _db_ids(about) | _db_ids(invited)
    requested = next(e for e in events if e["action"] == "gdpr.export.requested")
    assert (requested["ip"], requested["user_agent"]) == ("198.51.100.23", "JiaApp/5.1 (iPhone)")
    dave_invited = next(e for e in events if e["id"] == str(invited.get().id))
    assert "actor_id" not in dave_invited and "personal" not in dave_invited  # Dave's data is Dave's
    # Nobody else's rows.
    everything = json.dumps(tables)
    assert str(seeded.stranger_event.id) not in everything
    assert str(seeded.dave) not in json.dumps(tables["billing.customers"])
    # One CSV per table, with the same rows.
    for table, rows in tables.items():
        with archive.open(f"csv/{table}.csv") as handle:
            read = list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline="")))
        assert len(read) == len(rows), table
        if rows:
            assert {row["id"] for row in read if "id" in row} == {str(row.get("id")) for row in rows if "id" in row}


@pytest.mark.django_db
def test_a_user_with_data_in_every_app_gets_every_row_of_it(export_storage: Path) -> None:
    # given
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL)
    client = Client()
    response = client.post(
        "/api/v1/gdpr/exports", content_type="application/json", HTTP_AUTHORIZATION=bearer(ALICE, ALICE_EMAIL)
    )
    assert response.status_code == 202  # the seed's export is still open: this is the same one
    request_id = response.json()["id"]

    # when
    done = run_to_the_end(uuid.UUID(request_id))

    # then
    assert done.status == RequestStatus.COMPLETED
    polled = client.get(f"/api/v1/gdpr/exports/{request_id}", HTTP_AUTHORIZATION=bearer(ALICE)).json()
    assert polled["status"] == "completed"
    assert polled["download_url"] == f"/api/v1/gdpr/exports/{request_id}/download"
    assert_every_row_exported(_archive(client, request_id), seeded)
    assert AuditEvent.objects.filter(action="gdpr.export.completed", target_id=request_id).count() == 1
    assert AuditEvent.objects.filter(action="gdpr.export.downloaded", actor_id=pseudonym_for(ALICE)).count() == 1
    ready = OutboxMessage.objects.get(type="gdpr.export.ready")
    assert (ready.data["request_id"], ready.data["user_id"]) == (request_id, str(ALICE))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_export_runs_end_to_end_through_a_real_worker(export_storage: Path) -> None:
    seeded = seed_everywhere(user_id=ALICE, email=ALICE_EMAIL)
    DataSubjectRequest.objects.all().delete()  # the seed's own export; this one goes through the API
    client = Client()

    with celery_worker(["gdpr"]):
        response = client.post(
            "/api/v1/gdpr/exports", content_type="application/json", HTTP_AUTHORIZATION=bearer(ALICE, ALICE_EMAIL)
        )
        assert response.status_code == 202
        request_id = response.json()["id"]

        def completed() -> bool:
            poll = client.get(f"/api/v1/gdpr/exports/{request_id}", HTTP_AUTHORIZATION=bearer(ALICE))
            return bool(poll.json()["status"] == "completed")

        assert wait_until(completed, timeout=60)

    archive = _archive(client, request_id)
    tables = json.loads(archive.read("data.json"))["tables"]
    assert _ids(tables["billing.payments"]) == {str(seeded.payment.id)}
    assert _ids(tables["webhooks.stripe_events"]) == {str(event.id) for event in seeded.events}
    assert EntitlementSnapshot.objects.filter(user_id=ALICE).exists()
    assert list(export_storage.iterdir()) == [export_storage / f"{request_id}.zip"]
    assert WebhookEvent.objects.count() == 3
