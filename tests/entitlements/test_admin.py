"""Support's admin: families, members, and "why does this user have feature X"."""

import uuid

import pytest

from billing.models import Subscription
from entitlements.models import FamilyMembership
from gdpr.models import AuditEvent
from tests.entitlements.factories import family_of, plan_with, subscribe
from tests.support.auth import staff_client

pytestmark = pytest.mark.django_db(transaction=True)

EXPLAIN = "/admin/entitlements/entitlementsnapshot/explain/"


def test_support_sees_why_a_member_has_a_feature_and_why_not_another() -> None:
    owner, bob = uuid.uuid4(), uuid.uuid4()
    family = plan_with(["hd", "kids"], family_seats=2, code="family-monthly")
    subscribe(owner, family)
    subscribe(bob, plan_with(["studio"], code="studio"), status=Subscription.Status.CANCELED)
    family_of(owner, bob)
    support = staff_client("sam", "support")

    has = support.get(EXPLAIN, {"user_id": str(bob), "feature": "kids"})
    lacks = support.get(EXPLAIN, {"user_id": str(bob), "feature": "studio"})

    assert has.status_code == lacks.status_code == 200
    has_text, lacks_text = has.content.decode(), lacks.content.decode()
    assert "<strong>has</strong>" in has_text
    assert "their family owner&#x27;s subscription grants &#x27;kids&#x27; while it renews" in has_text
    assert "family-monthly" in has_text
    assert "<strong>does not have</strong>" in lacks_text
    assert "their own subscription: status &#x27;canceled&#x27; grants no access" in lacks_text


def test_staff_without_a_role_cannot_see_the_explanation_or_the_families() -> None:
    nobody = staff_client("nick", None)

    assert nobody.get(EXPLAIN, {"user_id": str(uuid.uuid4()), "feature": "hd"}).status_code == 403
    assert nobody.get("/admin/entitlements/familygroup/").status_code == 403


def test_support_lists_families_and_removes_a_member_with_an_audit_by_staff_client() -> None:
    owner, bob = uuid.uuid4(), uuid.uuid4()
    subscribe(owner, plan_with(["kids"], family_seats=2))
    group = family_of(owner, bob)
    support = staff_client("sam", "support")
    assert str(owner) in support.get("/admin/entitlements/familygroup/").content.decode()
    assert str(bob) in support.get(f"/admin/entitlements/familygroup/{group.id}/change/").content.decode()
    membership = FamilyMembership.objects.get(user_id=bob)

    response = support.post(
        "/admin/entitlements/familymembership/",
        {"action": "remove_members", "_selected_action": [str(membership.id)]},
    )

    assert response.status_code == 302
    assert not FamilyMembership.objects.filter(user_id=bob).exists()
    audit = AuditEvent.objects.get(action="family.member_removed")
    assert (audit.actor_type, audit.metadata["reason"]) == ("staff", "removed_by_staff")
