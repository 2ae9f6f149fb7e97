"""entitlements_refresh: events, audit, snapshots and family suspension after billing changes."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from billing.models import Subscription
from entitlements.models import EntitlementSnapshot, FamilyGroup, FamilyGroupStatus
from entitlements.services import entitlements_refresh, entitlements_refresh_lapsed
from gdpr.models import AuditEvent
from gdpr.registry import pseudonym_for
from tasks.models import OutboxMessage
from tests.entitlements.factories import customer_of, family_of, plan_with, subscribe
from tests.support.races import race, raised

pytestmark = pytest.mark.django_db


def refresh(*users: uuid.UUID) -> None:
    with transaction.atomic():
        entitlements_refresh(user_ids=set(users))


def changes(user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The entitlements.changed events for a user, oldest first: (added, removed)."""
    messages = OutboxMessage.objects.filter(type="entitlements.changed", subject=f"user:{user_id}").order_by("id")
    return [{"added": m.data["added"], "removed": m.data["removed"]} for m in messages]


def set_status(subscription: Subscription, status: str) -> None:
    Subscription.objects.filter(pk=subscription.pk).update(status=status)


def test_a_purchase_emits_the_added_features_once_with_an_audit_by_the_system() -> None:
    buyer = uuid.uuid4()
    subscribe(buyer, plan_with(["hd", "offline"]))

    refresh(buyer)
    refresh(buyer)  # nothing changed since: no second event

    assert changes(buyer) == [{"added": ["hd", "offline"], "removed": []}]
    message = OutboxMessage.objects.get(subject=f"user:{buyer}")
    assert message.data == {"user_id": str(buyer), "added": ["hd", "offline"], "removed": []}
    event = AuditEvent.objects.get(action="entitlements.changed", target_id=pseudonym_for(buyer))
    assert (event.actor_type, event.target_type, event.metadata) == (
        "system",
        "user",
        {"added": ["hd", "offline"], "removed": []},
    )
    assert EntitlementSnapshot.objects.get(user_id=buyer).features == ["hd", "offline"]


def test_an_upgrade_reports_only_what_was_added_and_removed() -> None:
    buyer = uuid.uuid4()
    basic = subscribe(buyer, plan_with(["hd", "ads-free"]))
    refresh(buyer)

    set_status(basic, Subscription.Status.CANCELED)
    subscribe(buyer, plan_with(["hd", "4k"]))
    refresh(buyer)

    assert changes(buyer)[-1] == {"added": ["4k"], "removed": ["ads-free"]}


def test_a_user_without_any_subscription_gets_no_event() -> None:
    nobody = uuid.uuid4()

    refresh(nobody)

    assert changes(nobody) == []
    assert EntitlementSnapshot.objects.get(user_id=nobody).features == []


def test_when_the_owners_family_plan_lapses_every_member_loses_its_features_and_the_family_is_suspended() -> None:
    owner, bob, carol = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    family = subscribe(owner, plan_with(["hd", "kids"], family_seats=3))
    group = family_of(owner, bob, carol)
    refresh(owner)
    assert changes(bob) == changes(carol) == [{"added": ["hd", "kids"], "removed": []}]

    set_status(family, Subscription.Status.UNPAID)
    refresh(owner)  # the webhook names only the owner; the members follow

    assert changes(bob)[-1] == changes(carol)[-1] == {"added": [], "removed": ["hd", "kids"]}
    group.refresh_from_db()
    assert group.status == FamilyGroupStatus.SUSPENDED
    assert AuditEvent.objects.filter(action="family.suspended", target_id=str(group.id)).count() == 1


def test_the_renewal_reactivates_the_family_and_gives_the_features_back() -> None:
    owner, bob = uuid.uuid4(), uuid.uuid4()
    family = subscribe(owner, plan_with(["kids"], family_seats=1))
    group = family_of(owner, bob)
    set_status(family, Subscription.Status.CANCELED)
    refresh(owner)
    assert FamilyGroup.objects.get(pk=group.pk).status == FamilyGroupStatus.SUSPENDED

    set_status(family, Subscription.Status.ACTIVE)
    refresh(owner)

    assert FamilyGroup.objects.get(pk=group.pk).status == FamilyGroupStatus.ACTIVE
    assert changes(bob)[-1] == {"added": ["kids"], "removed": []}
    assert AuditEvent.objects.filter(action="family.reactivated", target_id=str(group.id)).count() == 1


def test_a_downgrade_to_a_plan_without_seats_suspends_the_family_but_the_owner_keeps_the_new_plan() -> None:
    owner, bob = uuid.uuid4(), uuid.uuid4()
    family = subscribe(owner, plan_with(["hd", "kids"], family_seats=2))
    group = family_of(owner, bob)
    refresh(owner)

    set_status(family, Subscription.Status.CANCELED)
    subscribe(owner, plan_with(["hd"], family_seats=0))
    refresh(owner)

    assert FamilyGroup.objects.get(pk=group.pk).status == FamilyGroupStatus.SUSPENDED
    assert changes(owner)[-1] == {"added": [], "removed": ["kids"]}
    assert changes(bob)[-1] == {"added": [], "removed": ["hd", "kids"]}


def test_a_members_own_subscription_change_does_not_touch_the_owner() -> None:
    owner, bob = uuid.uuid4(), uuid.uuid4()
    subscribe(owner, plan_with(["kids"], family_seats=2))
    family_of(owner, bob)
    refresh(owner)
    owner_events = len(changes(owner))

    subscribe(bob, plan_with(["studio"]))
    refresh(bob)

    assert changes(bob)[-1] == {"added": ["studio"], "removed": []}
    assert len(changes(owner)) == owner_events


def test_a_refresh_rolled_back_with_the_billing_change_leaves_no_event_and_no_snapshot() -> None:
    buyer = uuid.uuid4()

    with pytest.raises(RuntimeError), transaction.atomic():
        subscribe(buyer, plan_with(["hd"]))
        entitlements_refresh(user_ids={buyer})
        raise RuntimeError("the webhook handler failed after the refresh")

    assert changes(buyer) == []
    assert not EntitlementSnapshot.objects.filter(user_id=buyer).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_of_one_user_report_each_change_exactly_once() -> None:
    buyer = uuid.uuid4()
    plans = [plan_with([f"feature-{n}"]) for n in range(4)]
    customer_of(buyer)

    def buy(plan: Any) -> None:
        with transaction.atomic():
            subscribe(buyer, plan)
            entitlements_refresh(user_ids={buyer})

    outcomes = race(*[lambda plan=plan: buy(plan) for plan in plans])

    assert raised(outcomes) == []
    reported = [key for change in changes(buyer) for key in change["added"]]
    assert sorted(reported) == [f"feature-{n}" for n in range(4)]
    assert all(change["removed"] == [] for change in changes(buyer))
    assert EntitlementSnapshot.objects.get(user_id=buyer).features == [f"feature-{n}" for n in range(4)]


@pytest.mark.django_db(transaction=True)
def test_grants_that_end_by_time_alone_are_refreshed_by_the_beat_job_with_their_events() -> None:
    owner, bob, leaving = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = timezone.now()
    # The owner's renewal failed 7 days and 1 minute ago: the 7-day grace has just run out.
    subscribe(
        owner,
        plan_with(["kids"], family_seats=2),
        status=Subscription.Status.PAST_DUE,
        period_start=now - timedelta(days=7, minutes=1),
    )
    group = family_of(owner, bob)
    # This one was set to cancel and its period ended a minute ago.
    subscribe(leaving, plan_with(["studio"]), period_end=now - timedelta(minutes=1), cancel_at_period_end=True)
    with time_machine.travel(now - timedelta(minutes=2)):  # the last refresh, while both still granted
        refresh(owner, leaving)
    assert changes(bob) == [{"added": ["kids"], "removed": []}]

    refreshed = entitlements_refresh_lapsed(now=now)

    assert refreshed == 2
    assert changes(owner)[-1] == changes(bob)[-1] == {"added": [], "removed": ["kids"]}
    assert changes(leaving)[-1] == {"added": [], "removed": ["studio"]}
    assert FamilyGroup.objects.get(pk=group.pk).status == FamilyGroupStatus.SUSPENDED
    assert entitlements_refresh_lapsed(now=now) == 2
    assert len(changes(bob)) == 2  # a second run finds nothing new to report
