"""Staff roles, the read-only audit trail admin with its CSV export, and audited admin sessions."""

import csv
import importlib
import io
import uuid
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client, RequestFactory

from gdpr.audit import (
    ActorType,
    AuditAction,
    AuditEvent,
    AuditEventPersonal,
    audit_seal_pending,
    record,
    verify_chain,
)
from gdpr.registry import pseudonym_for
from payments_project.roles import Role, RoleRestrictedAdmin, has_role
from tests.support.auth import signed_in

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/gdpr/auditevent/"
PASSWORD = "correct horse battery staple"


def _staff(username: str, *roles: Role, superuser: bool = False, staff: bool = True, active: bool = True) -> User:
    user = User.objects.create_user(
        username, password=PASSWORD, is_staff=staff, is_superuser=superuser, is_active=active
    )
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role.value)[0])
    return user


def _logged_in(user: User) -> Client:
    return signed_in(user)


def _event(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {"action": AuditAction.REFUND_REQUESTED, "actor_type": ActorType.STAFF, "actor_id": "7"}
    fields.update(overrides)
    with transaction.atomic():
        event = record(**fields)
    audit_seal_pending()  # as beat's sealer would a moment later
    event.refresh_from_db()
    return event


# --- roles -----------------------------------------------------------------------------------------------


def test_the_data_migrations_create_a_group_for_every_role() -> None:
    migrations = [
        importlib.import_module(f"gdpr.migrations.{name}") for name in ("0003_staff_role_groups", "0008_ops_role_group")
    ]
    Group.objects.filter(name__in=[role.value for role in Role]).delete()

    for migration in migrations:
        migration.create_groups(django_apps, None)

    assert set(Group.objects.values_list("name", flat=True)) >= {"finance", "support", "compliance", "ops"}
    assert {role.value for role in Role} == {name for migration in migrations for name in migration.ROLE_GROUPS}


def test_has_role_follows_group_membership_of_active_staff() -> None:
    finance = _staff("fiona", Role.FINANCE)

    assert has_role(finance, Role.FINANCE)
    assert has_role(finance, Role.SUPPORT, Role.FINANCE)
    assert not has_role(finance, Role.SUPPORT)
    assert not has_role(finance)


def test_superusers_have_every_role() -> None:
    root = _staff("root", superuser=True)

    assert all(has_role(root, role) for role in Role)


def test_a_group_member_who_is_not_active_staff_has_no_role() -> None:
    assert not has_role(_staff("nina", Role.FINANCE, staff=False), Role.FINANCE)
    assert not has_role(_staff("ian", Role.FINANCE, active=False), Role.FINANCE)
    assert not has_role(None, Role.FINANCE)


def test_the_role_restricted_admin_mixin_decides_by_role() -> None:
    class PaymentLikeAdmin(RoleRestrictedAdmin, admin.ModelAdmin):
        view_roles = (Role.FINANCE, Role.SUPPORT)
        change_roles = (Role.FINANCE,)

    model_admin = PaymentLikeAdmin(Group, admin.site)
    request = RequestFactory().get("/")
    for user, can_view, can_change in [
        (_staff("fiona", Role.FINANCE), True, True),
        (_staff("sam", Role.SUPPORT), True, False),
        (_staff("carla", Role.COMPLIANCE), False, False),
    ]:
        request.user = user
        assert model_admin.has_module_permission(request) is can_view
        assert model_admin.has_view_permission(request) is can_view
        assert model_admin.has_change_permission(request) is can_change
        assert model_admin.has_add_permission(request) is False
        assert model_admin.has_delete_permission(request) is False


# --- the audit trail admin ----------------------------------------------------------------------------------


def test_compliance_sees_the_audit_trail_with_filters() -> None:
    _event()
    client = _logged_in(_staff("carla", Role.COMPLIANCE))

    response = client.get(CHANGELIST, {"action": "refund.requested", "actor_type": "staff"})

    assert response.status_code == 200
    assert b"refund.requested" in response.content


@pytest.mark.parametrize("role", [Role.FINANCE, Role.SUPPORT])
def test_other_roles_do_not_see_the_audit_trail(role: Role) -> None:
    client = _logged_in(_staff("someone", role))

    assert client.get(CHANGELIST).status_code == 403


def test_nobody_adds_changes_or_deletes_audit_events_not_even_a_superuser() -> None:
    event = _event()
    client = _logged_in(_staff("root", superuser=True))

    assert client.get(f"{CHANGELIST}add/").status_code == 403
    assert client.get(f"{CHANGELIST}{event.pk}/delete/").status_code == 403
    response = client.post(f"{CHANGELIST}{event.pk}/change/", {"action": "refund.succeeded"})
    assert response.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).action == "refund.requested"


def test_the_csv_export_uses_real_csv_escaping_and_is_itself_audited() -> None:
    tricky = _event(target_type="payment", target_id='=HYPERLINK("http://evil")', metadata={"note": 'a "quoted", text'})
    plain = _event(action=AuditAction.REFUND_SUCCEEDED)
    carla = _staff("carla", Role.COMPLIANCE)

    response = _logged_in(carla).post(
        CHANGELIST, {"action": "export_csv", "_selected_action": [str(tricky.pk), str(plain.pk)]}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["action"] for row in rows] == ["refund.requested", "refund.succeeded"]
    assert rows[0]["target_id"] == "'" + '=HYPERLINK("http://evil")'  # neutralised formula
    assert '"quoted", text' in rows[0]["metadata"]
    exported = AuditEvent.objects.get(action="audit.exported")
    assert (exported.actor_type, exported.actor_id) == ("staff", str(carla.pk))
    assert exported.metadata["events"] == 2
    assert verify_chain()[1] is None


def test_compliance_sees_the_side_data_where_it_is_still_there() -> None:
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.31", HTTP_USER_AGENT="JiaApp/7")
    alice = uuid.uuid4()
    with_side = _event(
        actor_type=ActorType.USER, actor_id=str(alice), metadata={"invitee_email": "x@example.org"}, request=request
    )
    erased = _event(actor_type=ActorType.USER, actor_id=str(alice), request=request)
    AuditEventPersonal.objects.filter(event=erased).delete()  # as erasure does
    client = _logged_in(_staff("carla", Role.COMPLIANCE))

    shown = client.get(f"{CHANGELIST}{with_side.pk}/change/")
    gone = client.get(f"{CHANGELIST}{erased.pk}/change/")
    listed = client.get(CHANGELIST)

    assert shown.status_code == gone.status_code == 200
    for text in (b"198.51.100.31", b"JiaApp/7", b"x@example.org", pseudonym_for(alice).encode()):
        assert text in shown.content
    assert b"198.51.100.31" not in gone.content and pseudonym_for(alice).encode() in gone.content
    assert listed.content.count(b"198.51.100.31") == 1


def test_a_user_id_finds_the_events_by_and_about_that_user() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    by_alice = _event(actor_type=ActorType.USER, actor_id=str(alice), target_type="family_group", target_id="fam_77")
    about_alice = _event(target_type="user", target_id=str(alice))
    removed = _event(target_type="family_group", target_id="fam_78", metadata={"user_id": str(alice)})
    by_bob = _event(actor_type=ActorType.USER, actor_id=str(bob), target_type="family_group", target_id="fam_79")
    client = _logged_in(_staff("carla", Role.COMPLIANCE))

    response = client.get(CHANGELIST, {"q": str(alice)})

    assert response.status_code == 200
    found = set(response.context["cl"].result_list)
    assert found == {by_alice, about_alice, removed}
    assert by_bob not in found


def test_the_csv_export_carries_the_side_data_and_keeps_its_own_filters_out_of_the_chain() -> None:
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.32", HTTP_USER_AGENT="browser/9")
    alice = uuid.uuid4()
    with_side = _event(
        target_type="user", target_id=str(alice), metadata={"email": "alice@example.com"}, request=request
    )
    without = _event(action=AuditAction.REFUND_SUCCEEDED, target_type="user", target_id=str(alice))
    carla = _staff("carla", Role.COMPLIANCE)

    response = _logged_in(carla).post(
        f"{CHANGELIST}?q={alice}", {"action": "export_csv", "_selected_action": [str(with_side.pk), str(without.pk)]}
    )

    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(row["ip"], row["user_agent"]) for row in rows] == [("198.51.100.32", "browser/9"), ("", "")]
    assert "alice@example.com" in rows[0]["personal"] and rows[1]["personal"] == ""
    exported = AuditEvent.objects.get(action="audit.exported")
    assert str(alice) not in str(exported.metadata)  # the search was for a user id: side data only
    assert str(alice) in exported.personal.metadata["filters"]
    assert verify_chain()[1] is None


# --- admin sessions are audited -------------------------------------------------------------------------------


def test_an_admin_login_is_audited() -> None:
    user = _staff("fiona", Role.FINANCE)

    response = Client().post(
        "/admin/login/",
        {"username": "fiona", "password": PASSWORD},
        REMOTE_ADDR="198.51.100.5",
        HTTP_USER_AGENT="browser/1",
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(action="admin.login")
    assert (event.actor_type, event.actor_id, event.personal.ip, event.personal.user_agent) == (
        "staff",
        str(user.pk),
        "198.51.100.5",
        "browser/1",
    )


def test_a_failed_admin_login_is_audited_without_the_password() -> None:
    _staff("fiona", Role.FINANCE)

    response = Client().post("/admin/login/", {"username": "fiona", "password": "wrong"}, REMOTE_ADDR="198.51.100.6")

    assert response.status_code == 200
    event = AuditEvent.objects.get(action="admin.login_failed")
    assert event.actor_id == ""
    assert event.personal.metadata == {"username": "fiona"}
    assert event.personal.ip == "198.51.100.6"
    assert "wrong" not in str(event.metadata) + str(event.personal.metadata)


def test_an_admin_logout_is_audited() -> None:
    user = _staff("fiona", Role.FINANCE)
    client = _logged_in(user)

    client.post("/admin/logout/")

    assert AuditEvent.objects.filter(action="admin.logout", actor_id=str(user.pk)).count() == 1


@pytest.mark.parametrize("query", ["not-a-uuid", "42", ""])
def test_the_audit_trail_search_takes_any_text(query: str) -> None:
    event = _event(target_id="42")
    client = _logged_in(_staff("carla", Role.COMPLIANCE))

    response = client.get(CHANGELIST, {"q": query})

    assert response.status_code == 200
    if query == "42":
        assert str(event.seq).encode() in response.content
