"""Family plans through the API: create, invite, accept, remove, leave; seats under concurrency."""

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from billing.models import Subscription
from entitlements.models import FamilyGroup, FamilyInvitation, FamilyMembership
from gdpr.models import AuditEvent
from gdpr.registry import pseudonym_for
from tasks.models import OutboxMessage
from tests.entitlements.conftest import as_user
from tests.entitlements.factories import plan_with, subscribe
from tests.support.races import race

pytestmark = pytest.mark.django_db(transaction=True)

PROBLEM = "application/problem+json"
OWNER_EMAIL, BOB_EMAIL, CAROL_EMAIL = "alice@example.com", "bob@example.com", "carol@example.com"


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"] == f"urn:jia:payments:problem:{code}"


class Family:
    """An owner with a family plan of `seats`, and helpers to act as anyone."""

    def __init__(self, client: Client, *, seats: int = 2, features: tuple[str, ...] = ("hd", "kids")) -> None:
        self.client = client
        self.owner = uuid.uuid4()
        self.subscription = subscribe(self.owner, plan_with(features, family_seats=seats))

    def create(self) -> Any:
        return self.client.post("/api/v1/family", **as_user(self.owner, OWNER_EMAIL))

    def invite(self, email: str, *, by: uuid.UUID | None = None) -> Any:
        return self.client.post(
            "/api/v1/family/invitations",
            data={"email": email},
            content_type="application/json",
            **as_user(by or self.owner, OWNER_EMAIL),
        )

    def token_for(self, email: str) -> str:
        response = self.invite(email)
        assert response.status_code == 201, response.content
        return str(response.json()["token"])

    def accept(self, token: str, user_id: uuid.UUID, email: str) -> Any:
        return self.client.post(
            "/api/v1/family/invitations/accept",
            data={"token": token},
            content_type="application/json",
            **as_user(user_id, email),
        )

    def join(self, email: str) -> uuid.UUID:
        user_id = uuid.uuid4()
        response = self.accept(self.token_for(email), user_id, email)
        assert response.status_code == 200, response.content
        return user_id

    def remove(self, member: uuid.UUID, *, by: uuid.UUID) -> Any:
        return self.client.delete(f"/api/v1/family/members/{member}", **as_user(by))


def entitled(client: Client, user_id: uuid.UUID, feature: str) -> bool:
    response = client.get(f"/api/v1/entitlements/{feature}", **as_user(user_id))
    assert response.status_code == 200
    return bool(response.json()["entitled"])


@pytest.fixture
def family(client: Client) -> Family:
    family = Family(client)
    assert family.create().status_code == 201
    return family


# --- create ---------------------------------------------------------------------------------------


def test_an_owner_row_keeps_only_a_verified_address(client: Client) -> None:
    """The owner's membership row is one of "the user's own rows" whose address GDPR matches by: an
    unverified claim must not put someone else's address there."""
    family = Family(client, seats=3)

    response = client.post("/api/v1/family", **as_user(family.owner, "victim@example.com", email_verified=False))

    assert response.status_code == 201
    assert [m["email"] for m in response.json()["members"]] == [""]


def test_an_owner_with_an_active_family_plan_creates_their_family(client: Client) -> None:
    family = Family(client, seats=3)

    response = family.create()

    assert response.status_code == 201
    body = response.json()
    assert (body["owner_user_id"], body["status"], body["seats"], body["invitations"]) == (
        str(family.owner),
        "active",
        3,
        [],
    )
    assert [(m["user_id"], m["email"], m["role"]) for m in body["members"]] == [
        (str(family.owner), OWNER_EMAIL, "owner")
    ]
    assert AuditEvent.objects.filter(action="family.created", actor_id=pseudonym_for(family.owner)).count() == 1


def test_creating_a_family_without_an_active_family_plan_is_forbidden(client: Client) -> None:
    solo, lapsed = uuid.uuid4(), uuid.uuid4()
    subscribe(solo, plan_with(["hd"], family_seats=0))
    subscribe(lapsed, plan_with(["hd"], family_seats=4), status=Subscription.Status.CANCELED)

    for user in (solo, lapsed, uuid.uuid4()):
        problem(client.post("/api/v1/family", **as_user(user)), 403, "family_plan_required")

    assert not FamilyGroup.objects.exists()


def test_an_owner_cannot_create_a_second_family(family: Family) -> None:
    problem(family.create(), 409, "already_in_family")
    assert FamilyGroup.objects.count() == 1


def test_a_member_cannot_create_a_family_of_their_own_even_with_a_family_plan(client: Client, family: Family) -> None:
    bob = family.join(BOB_EMAIL)
    subscribe(bob, plan_with(["hd"], family_seats=2))

    problem(client.post("/api/v1/family", **as_user(bob)), 409, "already_in_family")


def test_the_family_is_unauthenticated_without_a_token(client: Client) -> None:
    problem(client.get("/api/v1/family"), 401, "not_authenticated")


# --- read -----------------------------------------------------------------------------------------


def test_the_owner_sees_members_and_pending_invitations_a_member_only_members_an_outsider_nothing(
    client: Client, family: Family
) -> None:
    bob = family.join(BOB_EMAIL)
    family.token_for(CAROL_EMAIL)

    as_owner = client.get("/api/v1/family", **as_user(family.owner)).json()
    as_bob = client.get("/api/v1/family", **as_user(bob)).json()

    assert [m["role"] for m in as_owner["members"]] == ["owner", "member"]
    assert [i["email"] for i in as_owner["invitations"]] == [CAROL_EMAIL]
    assert as_bob["members"] == as_owner["members"]
    assert as_bob["invitations"] == []
    problem(client.get("/api/v1/family", **as_user(uuid.uuid4())), 404, "family_not_found")


# --- invite ---------------------------------------------------------------------------------------


def test_an_invitation_returns_a_token_that_is_stored_only_as_a_hash_and_expires_in_72_hours(family: Family) -> None:
    response = family.invite("Carol@Example.com")

    assert response.status_code == 201
    token = response.json()["token"]
    invitation = FamilyInvitation.objects.get()
    assert invitation.email == CAROL_EMAIL
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not FamilyInvitation.objects.filter(token_hash=token).exists()
    expected = timezone.now() + timedelta(hours=72)
    assert abs((invitation.expires_at - expected).total_seconds()) < 5
    audit = AuditEvent.objects.get(action="family.invitation_created")
    assert audit.personal.metadata["invitee_email"] == CAROL_EMAIL  # personal data: erasable, not in metadata
    assert "invitee_email" not in audit.metadata


def test_only_the_owner_may_invite(client: Client, family: Family) -> None:
    bob = family.join(BOB_EMAIL)

    problem(family.invite(CAROL_EMAIL, by=bob), 403, "not_family_owner")
    problem(family.invite(CAROL_EMAIL, by=uuid.uuid4()), 404, "family_not_found")
    assert FamilyInvitation.objects.count() == 1  # bob's own, accepted


def test_a_malformed_email_is_a_validation_error_and_invites_nobody(family: Family) -> None:
    response = family.invite("not an email")

    problem(response, 400, "validation_error")
    assert response.json()["errors"][0]["field"] == "email"
    assert not FamilyInvitation.objects.exists()


def test_nobody_can_be_invited_when_every_seat_is_taken(client: Client) -> None:
    family = Family(client, seats=1)
    family.create()
    family.join(BOB_EMAIL)

    problem(family.invite(CAROL_EMAIL), 409, "no_seat_left")


def test_someone_already_in_the_family_cannot_be_invited_again(family: Family) -> None:
    family.join(BOB_EMAIL)

    problem(family.invite("BOB@example.com"), 409, "already_in_family")


# --- accept ---------------------------------------------------------------------------------------


def test_the_invited_user_joins_and_gets_the_family_features_at_the_next_check(client: Client, family: Family) -> None:
    token = family.token_for(BOB_EMAIL)
    bob = uuid.uuid4()
    assert not entitled(client, bob, "kids")

    response = family.accept(token, bob, "Bob@EXAMPLE.com")  # emails match case-insensitively

    assert response.status_code == 200
    assert [m["user_id"] for m in response.json()["members"]] == [str(family.owner), str(bob)]
    assert entitled(client, bob, "kids")
    listed = client.get("/api/v1/entitlements", **as_user(bob)).json()["features"]
    assert [(f["key"], f["source"]) for f in listed] == [("hd", "family"), ("kids", "family")]
    invitation = FamilyInvitation.objects.get()
    assert (invitation.status, invitation.accepted_by_user_id) == ("accepted", bob)
    assert AuditEvent.objects.filter(action="family.member_added", actor_id=pseudonym_for(bob)).count() == 1
    change = OutboxMessage.objects.get(type="entitlements.changed", subject=f"user:{bob}")
    assert change.data == {"user_id": str(bob), "added": ["hd", "kids"], "removed": []}


def test_an_invitation_is_bound_to_the_invited_email(family: Family) -> None:
    token = family.token_for(BOB_EMAIL)

    problem(family.accept(token, uuid.uuid4(), "mallory@example.com"), 403, "invitation_email_mismatch")
    problem(family.accept(token, uuid.uuid4(), ""), 403, "invitation_email_mismatch")
    assert FamilyMembership.objects.count() == 1
    assert FamilyInvitation.objects.get().status == "pending"


def test_an_invitation_is_single_use(family: Family) -> None:
    token = family.token_for(BOB_EMAIL)
    assert family.accept(token, uuid.uuid4(), BOB_EMAIL).status_code == 200

    problem(family.accept(token, uuid.uuid4(), BOB_EMAIL), 409, "invitation_used")
    assert FamilyMembership.objects.count() == 2


def test_an_expired_invitation_cannot_be_accepted(family: Family) -> None:
    token = family.token_for(BOB_EMAIL)

    with time_machine.travel(timezone.now() + timedelta(hours=72, seconds=1)):
        problem(family.accept(token, uuid.uuid4(), BOB_EMAIL), 409, "invitation_expired")

    assert FamilyMembership.objects.count() == 1


def test_an_unknown_token_is_not_found(family: Family) -> None:
    problem(family.accept("no-such-token", uuid.uuid4(), BOB_EMAIL), 404, "invitation_not_found")


def test_someone_already_in_a_family_cannot_join_another(client: Client, family: Family) -> None:
    other = Family(client)
    other.create()
    bob = other.join(BOB_EMAIL)

    problem(family.accept(family.token_for(BOB_EMAIL), bob, BOB_EMAIL), 409, "already_in_family")
    owner_email = "dave@example.com"  # an owner is in their family too
    problem(family.accept(family.token_for(owner_email), other.owner, owner_email), 409, "already_in_family")
    assert FamilyMembership.objects.get(user_id=bob).group.owner_user_id == other.owner


def test_nobody_joins_a_family_whose_plan_has_lapsed(family: Family) -> None:
    token = family.token_for(BOB_EMAIL)
    Subscription.objects.filter(pk=family.subscription.pk).update(status=Subscription.Status.CANCELED)

    problem(family.accept(token, uuid.uuid4(), BOB_EMAIL), 409, "family_suspended")
    problem(family.invite(CAROL_EMAIL), 409, "family_suspended")


def test_the_last_seat_goes_to_the_first_accept(client: Client) -> None:
    family = Family(client, seats=1)
    family.create()
    first, second = family.token_for(BOB_EMAIL), family.token_for(CAROL_EMAIL)
    assert family.accept(first, uuid.uuid4(), BOB_EMAIL).status_code == 200

    problem(family.accept(second, uuid.uuid4(), CAROL_EMAIL), 409, "no_seat_left")


def test_two_accepts_racing_for_the_last_seat_one_wins_and_the_other_gets_409(client: Client) -> None:
    for _ in range(5):  # the race, several times over
        family = Family(client, seats=1)
        family.create()
        tokens = [(family.token_for(email), uuid.uuid4(), email) for email in (BOB_EMAIL, CAROL_EMAIL)]

        responses = race(*[lambda f=family, t=t: f.accept(*t) for t in tokens])

        assert sorted(r.status_code for r in responses) == [200, 409]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["type"].endswith("no_seat_left")
        assert FamilyMembership.objects.filter(group__owner_user_id=family.owner, role="member").count() == 1


def test_one_user_accepting_two_families_at_once_ends_up_in_exactly_one(client: Client) -> None:
    first, second = Family(client), Family(client)
    first.create()
    second.create()
    bob = uuid.uuid4()
    tokens = [first.token_for(BOB_EMAIL), second.token_for(BOB_EMAIL)]

    responses = race(lambda: first.accept(tokens[0], bob, BOB_EMAIL), lambda: second.accept(tokens[1], bob, BOB_EMAIL))

    assert sorted(r.status_code for r in responses) == [200, 409]
    assert FamilyMembership.objects.filter(user_id=bob).count() == 1


# --- remove and leave -----------------------------------------------------------------------------


def test_the_owner_removes_a_member_who_loses_the_family_features_at_the_next_check(
    client: Client, family: Family
) -> None:
    bob = family.join(BOB_EMAIL)
    assert entitled(client, bob, "kids")

    response = family.remove(bob, by=family.owner)

    assert response.status_code == 204
    assert not entitled(client, bob, "kids")
    assert not FamilyMembership.objects.filter(user_id=bob).exists()
    audit = AuditEvent.objects.get(action="family.member_removed")
    assert (audit.actor_id, audit.metadata) == (
        pseudonym_for(family.owner),
        {"user_id": pseudonym_for(bob), "reason": "removed"},
    )
    last = OutboxMessage.objects.filter(type="entitlements.changed", subject=f"user:{bob}").order_by("-id")[0]
    assert last.data["removed"] == ["hd", "kids"]


def test_a_member_leaves(client: Client, family: Family) -> None:
    bob = family.join(BOB_EMAIL)

    assert family.remove(bob, by=bob).status_code == 204

    assert not entitled(client, bob, "hd")
    assert AuditEvent.objects.get(action="family.member_removed").metadata["reason"] == "left"


def test_nobody_else_can_remove_a_member_and_learns_nothing(client: Client, family: Family) -> None:
    bob = family.join(BOB_EMAIL)
    carol = family.join(CAROL_EMAIL)
    stranger_family = Family(client)
    stranger_family.create()

    problem(family.remove(bob, by=carol), 404, "member_not_found")
    problem(family.remove(bob, by=stranger_family.owner), 404, "member_not_found")
    problem(family.remove(uuid.uuid4(), by=family.owner), 404, "member_not_found")
    assert FamilyMembership.objects.filter(user_id=bob).exists()


def test_the_owner_cannot_leave_their_own_family(family: Family) -> None:
    problem(family.remove(family.owner, by=family.owner), 409, "owner_cannot_leave")
