"""Family seat downgrades (issue #14, point 10). The rule: a family plan of N seats shares its features with the
N longest-standing members (by when they joined); the others are suspended — no family features — until a seat
frees up (the owner removes someone, someone leaves) or the plan grows again. Whoever loses or regains access
gets `entitlements.changed`. It holds wherever entitlements are resolved: webhooks, removals, catalog changes."""

import uuid
from typing import Any

import pytest
from django.test import Client

from billing.catalog import catalog_import, plans_entitlements_changed
from billing.models import Plan
from entitlements.models import EntitlementSnapshot, FamilyMembership
from entitlements.selectors import entitlement_explain
from entitlements.services import (
    entitlements_refresh_plan_subscribers,
    family_group_create,
    family_invitation_accept,
    family_invitation_create,
    family_member_remove,
)
from tests.billing.factories import PriceFactory
from tests.entitlements.conftest import as_user
from tests.entitlements.factories import plan_with
from tests.entitlements.test_webhook_flow import Stripe, changes, entitled
from tests.support.races import race, raised
from tests.support.stripe_events import delivery, stripe_event
from tests.support.worker import purge
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process

pytestmark = pytest.mark.django_db(transaction=True)

FEATURES = ["hd", "kids"]


@pytest.fixture(autouse=True)
def _no_leftover_jobs() -> Any:
    yield
    purge(["webhooks", "outbox", "default"])  # nothing consumes them in these tests


class FamilyOnPlans:
    """An owner subscribed through Stripe's webhooks to a 5-seat plan, which can move to a 2-seat one."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.owner = uuid.uuid4()
        suffix = uuid.uuid4().hex[:6]
        self.five = PriceFactory(plan=plan_with(FEATURES, family_seats=5, code=f"family5-{suffix}"))
        self.two = PriceFactory(plan=plan_with(FEATURES, family_seats=2, code=f"family2-{suffix}"))
        self.stripe = Stripe(client, self.owner)
        self.sub_id = f"sub_{uuid.uuid4().hex[:14]}"
        self.stripe.send("customer.subscription.created", self.on(self.five))
        family_group_create(owner_user_id=self.owner, owner_email="")
        self.members: list[uuid.UUID] = []

    def on(self, price: Any) -> dict[str, Any]:
        return self.stripe.subscription(self.sub_id, price.stripe_price_id, "active")

    def invite(self) -> tuple[uuid.UUID, str, str]:
        user_id = uuid.uuid4()
        email = f"{user_id.hex[:10]}@example.com"
        _, token = family_invitation_create(owner_user_id=self.owner, email=email)
        return user_id, email, token

    def join(self, count: int) -> list[uuid.UUID]:
        for _ in range(count):
            user_id, email, token = self.invite()
            family_invitation_accept(token=token, user_id=user_id, email=email)
            self.members.append(user_id)
        return self.members

    def move_to(self, price: Any) -> None:
        self.stripe.send("customer.subscription.updated", self.on(price))

    def entitled_members(self) -> list[uuid.UUID]:
        return [m for m in self.members_in_order() if entitled(self.client, m, "hd")]

    def members_in_order(self) -> list[uuid.UUID]:
        return list(
            FamilyMembership.objects.filter(group__owner_user_id=self.owner, role="member")
            .order_by("joined_at", "id")
            .values_list("user_id", flat=True)
        )


def test_a_downgrade_keeps_the_longest_standing_members_and_suspends_the_rest_until_an_upgrade(client: Client) -> None:
    family = FamilyOnPlans(client)
    members = family.join(5)
    assert family.entitled_members() == members

    # when: 5 seats -> 2
    family.move_to(family.two)

    # then: the two who joined first keep the family features; the three others lose them, and are told
    assert family.entitled_members() == members[:2]
    for member in members[2:]:
        assert changes(member)[-1] == ([], FEATURES)
    for member in members[:2]:
        assert len(changes(member)) == 1  # only the grant when they joined
    assert entitled(client, family.owner, "hd")  # the owner's own plan is untouched
    body = client.get("/api/v1/family", **as_user(family.owner)).json()
    assert (body["seats"], body["status"]) == (2, "active")
    assert body["suspended"] == [str(m) for m in members[2:]]
    assert "suspended until a seat frees up" in entitlement_explain(user_id=members[4], feature_key="hd")[0].detail

    # when: back to 5 seats, everyone is restored (and told)
    family.move_to(family.five)

    assert family.entitled_members() == members
    for member in members[2:]:
        assert changes(member)[-1] == (FEATURES, [])
    assert client.get("/api/v1/family", **as_user(family.owner)).json()["suspended"] == []


def test_a_freed_seat_goes_to_the_next_member_in_line(client: Client) -> None:
    family = FamilyOnPlans(client)
    members = family.join(4)
    family.move_to(family.two)

    family_member_remove(member_user_id=members[0], actor_user_id=family.owner)

    assert family.entitled_members() == [members[1], members[2]]
    assert changes(members[2])[-1] == (FEATURES, [])
    assert not entitled(client, members[0], "hd")
    assert not entitled(client, members[3], "hd")


def test_nobody_can_join_a_family_that_has_no_free_seat_after_a_downgrade(client: Client) -> None:
    family = FamilyOnPlans(client)
    family.join(3)
    user_id, email, token = family.invite()  # while there were seats
    family.move_to(family.two)

    response = client.post(
        "/api/v1/family/invitations/accept",
        {"token": token},
        content_type="application/json",
        **as_user(user_id, email),
    )

    assert response.status_code == 409
    assert response.json()["type"].endswith("no_seat_left")


def test_a_catalog_change_of_family_seats_suspends_members_beyond_them(client: Client) -> None:
    family = FamilyOnPlans(client)
    members = family.join(3)
    plan = family.five.plan
    sent: list[Any] = []
    plans_entitlements_changed.connect(lambda **kwargs: sent.append(kwargs["plan_ids"]), weak=False, dispatch_uid="t")
    try:
        catalog_import(
            data={
                "features": [{"key": key, "name": key} for key in FEATURES],
                "plans": [
                    {
                        "code": plan.code,
                        "name": plan.name,
                        "family_seats": 1,
                        "features": FEATURES,
                        "prices": [
                            {
                                "stripe_price_id": family.five.stripe_price_id,
                                "currency": "eur",
                                "unit_amount": 1299,
                                "interval": "month",
                            }
                        ],
                    }
                ],
            }
        )
    finally:
        plans_entitlements_changed.disconnect(dispatch_uid="t")
    assert sent == [[plan.id]]
    assert Plan.objects.get(id=plan.id).family_seats == 1

    # what the task the import enqueued does
    assert entitlements_refresh_plan_subscribers(plan_ids=[plan.id]) == 1

    assert family.entitled_members() == members[:1]
    assert changes(members[2])[-1] == ([], FEATURES)


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_joins_and_a_downgrade_never_leave_more_entitled_members_than_seats(
    client: Client, round_: int
) -> None:
    # given: a 5-seat family with 1 member, 4 invitations about to be accepted, and a downgrade to 2 seats
    family = FamilyOnPlans(client)
    family.join(1)
    invited = [family.invite() for _ in range(4)]
    family.stripe.clock += 1
    downgrade = stripe_event("customer.subscription.updated", family.on(family.two), created=family.stripe.clock)
    assert client.post("/webhooks/stripe/", **delivery(downgrade)).status_code == 200
    row = WebhookEvent.objects.get(event_id=downgrade["id"])

    def accept(user_id: uuid.UUID, email: str, token: str) -> Any:
        return family_invitation_accept(token=token, user_id=user_id, email=email)

    # when: all at once (the downgrade first or last in the list, by round)
    calls = [lambda i=i: accept(*i) for i in invited]
    process = [lambda: webhook_event_process(event_id=row.id)]
    outcomes = race(*(process + calls if round_ % 2 else calls + process))

    # then: the webhook applied; joins that won a seat stayed; never more entitled members than seats,
    # and they are the longest-standing ones; the stored snapshots agree
    assert WebhookEvent.objects.get(id=row.id).status == WebhookEvent.Status.PROCESSED
    errors = raised(outcomes)
    assert all(type(e).__name__ in {"NoSeatLeft"} for e in errors), errors
    in_line = family.members_in_order()
    assert len(in_line) >= 1
    assert family.entitled_members() == in_line[:2]
    snapshots = dict(EntitlementSnapshot.objects.filter(user_id__in=in_line).values_list("user_id", "features"))
    assert [m for m in in_line if "hd" in snapshots.get(m, [])] == in_line[:2]
