"""Who a data subject is (API.md, "Personal data"): the user id, their Stripe customer ids, and an address
matched exactly — from their own rows, or the token's `email` only when `email_verified` is true. Look-alike
users (bob / jimbob / bob@x.co) and hostile claims (`@`, `%`, `_`, empty) export and erase nobody else."""

import io
import json
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import models, transaction
from django.test import Client
from django.utils import timezone

from billing.models import Customer
from entitlements.models import EntitlementSnapshot, FamilyInvitation, FamilyMembership
from entitlements.services import entitlements_refresh, family_group_create, family_invitation_create
from gdpr.models import AuditEventPersonal, RequestStatus
from gdpr.registry import JSONStringsAny, redact_text
from tasks.models import OutboxMessage
from tasks.outbox import emit
from tests.billing.factories import CustomerFactory
from tests.entitlements.factories import plan_with, subscribe
from tests.gdpr.support import run_to_the_end
from tests.support.auth import bearer
from tests.support.stripe_events import inbox_event
from tests.support.stripe_fake import StripeFake
from webhooks.models import WebhookEvent

pytestmark = pytest.mark.django_db(transaction=True)  # erasure calls (fake) Stripe outside transactions

BOB, JIMBOB, BOBCO, HOSTILE = (uuid.uuid4() for _ in range(4))
# What an erasure of Bob may touch: his own rows; every other row must be exactly as it was.
WATCHED: tuple[type[models.Model], ...] = (
    Customer,
    WebhookEvent,
    OutboxMessage,
    FamilyInvitation,
    FamilyMembership,
    EntitlementSnapshot,
    AuditEventPersonal,
)


@dataclass
class Person:
    user_id: uuid.UUID
    email: str
    stripe_customer_id: str
    name: str

    def found_in(self, tables: Any) -> list[str]:
        """What of this person is in `tables`: their id, customer id or name anywhere, their address as a
        value (`bob@x.co` is a substring of Bob's own `bob@x.com`, and that is not a trace of bob@x.co)."""
        text = json.dumps(tables)
        found = [trace for trace in (str(self.user_id), self.stripe_customer_id, self.name) if trace in text]
        return found + ([self.email] if self.email in _strings(tables) else [])


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value.lower(), *value.lower().split()}
    if isinstance(value, dict):
        return set().union(*map(_strings, value.keys()), *map(_strings, value.values()))
    if isinstance(value, list):
        return set().union(*map(_strings, value))
    return set()


def _snapshot() -> dict[str, dict[Any, dict[str, Any]]]:
    return {
        model._meta.label: {row["pk"]: row for row in model.objects.values("pk", *_columns(model))} for model in WATCHED
    }


def _columns(model: type[models.Model]) -> list[str]:
    return [field.attname for field in model._meta.concrete_fields]


def _seed_person(user_id: uuid.UUID, email: str, name: str, inviter: uuid.UUID) -> Person:
    """A customer whose Stripe events (one linked by customer id, one only naming the address), domain events,
    entitlements and a family invitation (with its audit row) all carry their address and id."""
    customer = CustomerFactory(user_id=user_id, email=email)
    stripe_customer = {
        "id": customer.stripe_customer_id,
        "object": "customer",
        "email": email,
        "name": name,
        "phone": "+33 6 12 34 56 78",
        "address": {"line1": f"1 rue de {name}", "city": "Paris"},
        "metadata": {"user_id": str(user_id)},
    }
    inbox_event("customer.updated", stripe_customer, customer_id=customer.stripe_customer_id, status="processed")
    inbox_event(
        "charge.succeeded",
        {"id": f"ch_{uuid.uuid4().hex[:12]}", "object": "charge", "receipt_email": email},
        status="processed",
    )
    with transaction.atomic():
        emit("test.person", f"user:{user_id}", {"user_id": str(user_id), "email": email, "note": f"hello {email}"})
    OutboxMessage.objects.filter(subject=f"user:{user_id}").update(status="published", published_at=timezone.now())
    family_invitation_create(owner_user_id=inviter, email=email)
    entitlements_refresh(user_ids={user_id})
    return Person(user_id, email, customer.stripe_customer_id, name)


@pytest.fixture
def people() -> dict[str, Person]:
    inviter = uuid.uuid4()
    subscribe(inviter, plan_with(["hd"], family_seats=5))
    family_group_create(owner_user_id=inviter, owner_email="")
    return {
        "bob": _seed_person(BOB, "bob@x.com", "Bob Original", inviter),
        "jimbob": _seed_person(JIMBOB, "jimbob@x.com", "Jim Lookalike", inviter),
        "bobco": _seed_person(BOBCO, "bob@x.co", "Bob Cousin", inviter),
    }


def _export(user_id: uuid.UUID, auth: str) -> dict[str, Any]:
    client = Client()
    response = client.post("/api/v1/gdpr/exports", content_type="application/json", HTTP_AUTHORIZATION=auth)
    assert response.status_code == 202, response.content
    done = run_to_the_end(uuid.UUID(response.json()["id"]))
    assert done.status == RequestStatus.COMPLETED, done.last_error
    download = client.get(f"/api/v1/gdpr/exports/{done.id}/download", HTTP_AUTHORIZATION=auth)
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    tables: dict[str, Any] = json.loads(archive.read("data.json"))["tables"]
    return tables


CLAIMS = [
    pytest.param({"email": "bob@x.com"}, id="unverified-own-address"),
    pytest.param({"email": "BOB@X.COM", "email_verified": True}, id="verified-own-address"),
    pytest.param({"email": "jimbob@x.com"}, id="unverified-lookalike"),
    pytest.param({"email": "x.com", "email_verified": True}, id="verified-domain"),
    pytest.param({"email": "@", "email_verified": True}, id="at-sign"),
    pytest.param({"email": "%", "email_verified": True}, id="percent"),
    pytest.param({"email": "_", "email_verified": True}, id="underscore"),
    pytest.param({"email": "", "email_verified": True}, id="empty"),
    pytest.param({"email": "bob@x.co", "email_verified": "true"}, id="verified-as-a-string-is-not-verified"),
]


@pytest.mark.parametrize("claims", CLAIMS)
def test_an_export_holds_nothing_of_look_alike_users_whatever_the_token_claims(
    people: dict[str, Person], export_storage: Path, claims: dict[str, Any]
) -> None:
    tables = _export(BOB, bearer(BOB, **claims))

    for other in ("jimbob", "bobco"):
        assert people[other].found_in(tables) == [], f"{other} is in Bob's export"
    # and Bob's own data is all there, found by his id and his customer, whatever the claim
    events = tables["webhooks.stripe_events"]
    assert {event["payload"]["data"]["object"].get("email") for event in events} == {"bob@x.com", None}
    assert len(events) == 2  # his customer's event, and the charge whose receipt went to his own address
    assert [row["email"] for row in tables["billing.customers"]] == ["bob@x.com"]
    assert [row["email"] for row in tables["entitlements.family_invitations"]] == ["bob@x.com"]


@pytest.mark.parametrize("claims", [c for c in CLAIMS if c.values[0].get("email_verified") is True])
def test_a_stranger_with_a_hostile_verified_claim_exports_nobody(
    people: dict[str, Person], export_storage: Path, claims: dict[str, Any]
) -> None:
    if claims["email"].lower() == "bob@x.com":
        pytest.skip("Bob's own verified address is Bob's")
    tables = _export(HOSTILE, bearer(HOSTILE, **claims))

    assert tables["webhooks.stripe_events"] == []
    assert tables["billing.customers"] == []
    assert tables["entitlements.family_invitations"] == []
    for person in people.values():
        assert person.found_in(tables) == []


@pytest.mark.parametrize(
    "claims", [{"email": "bob@x.com", "email_verified": True}, {"email": "@", "email_verified": True}]
)
def test_an_erasure_changes_no_row_of_look_alike_users(
    people: dict[str, Person], stripe_fake: StripeFake, export_storage: Path, claims: dict[str, Any]
) -> None:
    # given: which rows are Bob's (made by his seed) and everyone's rows as they are
    before = _snapshot()
    bobs = _rows_naming(people["bob"])
    assert bobs["webhooks.WebhookEvent"] and bobs["tasks.OutboxMessage"] and bobs["gdpr.AuditEventPersonal"]

    # when
    response = Client().post(
        "/api/v1/gdpr/erasure", content_type="application/json", HTTP_AUTHORIZATION=bearer(BOB, **claims)
    )
    assert response.status_code == 202
    done = run_to_the_end(uuid.UUID(response.json()["id"]))
    assert done.status == RequestStatus.COMPLETED, done.last_error

    # then: every row that is not Bob's is exactly as it was
    after = _snapshot()
    for table, rows in before.items():
        for pk, row in rows.items():
            if pk in bobs.get(table, set()):
                continue
            assert after[table].get(pk) == row, f"{table} {pk} changed by Bob's erasure"
    # and Bob's were erased
    assert (
        not WebhookEvent.objects.filter(raw_body__contains='bob@x.com"').exclude(raw_body__contains="jimbob").exists()
    )
    assert not FamilyInvitation.objects.filter(email="bob@x.com").exists()
    assert not OutboxMessage.objects.filter(data__email="bob@x.com").exists()


def _rows_naming(person: Person) -> dict[str, set[Any]]:
    """Bob's rows, found the way the contract says (his id, his customer id, his exact address)."""
    ids = [str(person.user_id), person.email, person.stripe_customer_id]
    return {
        "billing.Customer": set(Customer.objects.filter(user_id=person.user_id).values_list("pk", flat=True)),
        "webhooks.WebhookEvent": set(
            WebhookEvent.objects.filter(JSONStringsAny("raw_body", ids)).values_list("pk", flat=True)
        ),
        "tasks.OutboxMessage": set(
            OutboxMessage.objects.filter(JSONStringsAny("data", ids)).values_list("pk", flat=True)
        ),
        "entitlements.FamilyInvitation": set(
            FamilyInvitation.objects.filter(email=person.email).values_list("pk", flat=True)
        ),
        "entitlements.FamilyMembership": set(
            FamilyMembership.objects.filter(user_id=person.user_id).values_list("pk", flat=True)
        ),
        "entitlements.EntitlementSnapshot": set(
            EntitlementSnapshot.objects.filter(user_id=person.user_id).values_list("pk", flat=True)
        ),
        "gdpr.AuditEventPersonal": set(
            AuditEventPersonal.objects.filter(JSONStringsAny("metadata", ids)).values_list("pk", flat=True)
        ),
    }


def test_json_matching_is_exact_equality_never_a_substring(people: dict[str, Person]) -> None:
    def naming(*values: str) -> int:
        return WebhookEvent.objects.filter(JSONStringsAny("raw_body", values)).count()

    assert naming("bob@x.com") == 2
    assert naming("BOB@x.COM") == 2
    assert naming("@", "%", "_", "", "x.com", "bob") == 0


def test_redaction_replaces_the_address_as_a_whole_token_only() -> None:
    text = "Refund for bob@x.com, cc jimbob@x.com and bob@x.com.au; BOB@X.COM."

    assert redact_text(text, {"bob@x.com": "[erased]"}) == (
        "Refund for [erased], cc jimbob@x.com and bob@x.com.au; [erased]."
    )
