"""Reads: the resolver's inputs from the database, users' entitlements (through the cache), families."""

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.models import Subscription
from entitlements import cache
from entitlements.models import FamilyGroup, FamilyInvitation, FamilyMembership, InvitationStatus, MembershipRole
from entitlements.resolution import (
    ACTIVE,
    ENTITLING_STATUSES,
    PAST_DUE,
    TRIALING,
    Entitlements,
    MembershipFacts,
    Reason,
    SubscriptionFacts,
    explain,
    family_seats,
    resolve,
)


def past_due_grace() -> timedelta:
    return timedelta(days=settings.ENTITLEMENTS_PAST_DUE_GRACE_DAYS)


@dataclass(frozen=True)
class ResolverInputs:
    memberships: list[MembershipFacts]
    subscriptions: list[SubscriptionFacts]


def _subscription_facts(rows: Iterable[tuple[Any, ...]]) -> list[SubscriptionFacts]:
    """Fold the (subscription, feature) join rows into one SubscriptionFacts per subscription."""
    by_id: dict[uuid.UUID, tuple[tuple[Any, ...], set[str]]] = {}
    for row in rows:
        *facts, feature_key = row
        entry = by_id.setdefault(facts[0], (tuple(facts), set()))
        if feature_key is not None:  # a plan without features joins to one NULL row
            entry[1].add(feature_key)
    return [
        SubscriptionFacts(
            subscription_id=stripe_id,
            user_id=user_id,
            status=status,
            current_period_start=start,
            current_period_end=end,
            cancel_at_period_end=cancel_at_period_end,
            family_seats=family_seats,
            plan_code=plan_code,
            features=frozenset(keys),
        )
        for (_, stripe_id, user_id, status, start, end, cancel_at_period_end, family_seats, plan_code), keys in (
            by_id.values()
        )
    ]


_SUBSCRIPTION_COLUMNS = (
    "id",
    "stripe_subscription_id",
    "customer__user_id",
    "status",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "plan__family_seats",
    "plan__code",
    "plan__features__key",
)


def _subscriptions_of(user_ids: Collection[uuid.UUID], *, entitling_only: bool = True) -> QuerySet[Subscription]:
    subscriptions = Subscription.objects.filter(customer__user_id__in=user_ids)
    if entitling_only:
        subscriptions = subscriptions.filter(status__in=ENTITLING_STATUSES)
    return subscriptions


def _with_seat(memberships: QuerySet[FamilyMembership]) -> Any:
    """Each membership's `seat`: its place among its family's members by (joined_at, id), 1 for the
    longest-standing (resolution.holds_seat), counted over the whole family, not only the rows selected."""
    earlier = (
        FamilyMembership.objects.filter(group=OuterRef("group"), role=MembershipRole.MEMBER)
        .filter(Q(joined_at__lt=OuterRef("joined_at")) | Q(joined_at=OuterRef("joined_at"), id__lt=OuterRef("id")))
        .order_by()
        .values("group")
        .annotate(n=Count("id"))
        .values("n")
    )
    return memberships.annotate(seat=Coalesce(Subquery(earlier, output_field=IntegerField()), 0) + 1)


def plan_subscriber_ids(*, plan_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Users with an access-granting subscription to one of these plans."""
    return set(
        Subscription.objects.filter(plan_id__in=plan_ids, status__in=ENTITLING_STATUSES).values_list(
            "customer__user_id", flat=True
        )
    )


def resolver_inputs(*, user_ids: Collection[uuid.UUID]) -> ResolverInputs:
    """Everything `resolve` needs for these users, in two queries whatever their number:
    their memberships (with each family's owner), then the access-granting subscriptions of the
    users and of those owners, joined to plan and features."""
    memberships = [
        MembershipFacts(user_id=user_id, owner_user_id=owner_user_id, seat=seat)
        for user_id, owner_user_id, seat in _with_seat(
            FamilyMembership.objects.filter(user_id__in=user_ids, role=MembershipRole.MEMBER)
        ).values_list("user_id", "group__owner_user_id", "seat")
    ]
    owners = {membership.owner_user_id for membership in memberships}
    rows = _subscriptions_of({*user_ids, *owners}).values_list(*_SUBSCRIPTION_COLUMNS)
    return ResolverInputs(memberships=memberships, subscriptions=_subscription_facts(rows))


def users_with_grants_ended(*, since: datetime, until: datetime, past_due_grace: timedelta) -> list[uuid.UUID]:
    """Users with a subscription whose access ended by time in (since, until]: past_due whose grace
    ran out (measured as resolution.access_until does), or set to cancel at a period end now past."""
    past_due = Q(status=PAST_DUE)
    ended = (
        (
            past_due
            & Q(current_period_start__gt=since - past_due_grace, current_period_start__lte=until - past_due_grace)
        )
        | (
            past_due
            & Q(current_period_start__isnull=True)
            & Q(current_period_end__gt=since - past_due_grace, current_period_end__lte=until - past_due_grace)
        )
        | Q(
            status__in=[ACTIVE, TRIALING],
            cancel_at_period_end=True,
            current_period_end__gt=since,
            current_period_end__lte=until,
        )
    )
    return list(Subscription.objects.filter(ended).values_list("customer__user_id", flat=True).distinct())


def entitlements_from_database(
    *, user_ids: Collection[uuid.UUID], now: datetime | None = None
) -> dict[uuid.UUID, Entitlements]:
    """Resolve straight from the database (2 queries); the cache's miss path and its fallback."""
    if not user_ids:
        return {}
    inputs = resolver_inputs(user_ids=user_ids)
    return resolve(
        user_ids=user_ids,
        subscriptions=inputs.subscriptions,
        memberships=inputs.memberships,
        now=now or timezone.now(),
        past_due_grace=past_due_grace(),
    )


def user_entitlements(*, user_id: uuid.UUID) -> Entitlements:
    """One user's entitlements: the hot path (cache first, the database on a miss or a cache outage)."""
    return cache.entitlements_get_many(user_ids=[user_id], load=entitlements_from_database)[user_id]


def user_entitled_remembered(*, user_id: str, feature: str) -> bool | None:
    """Whether one user (a canonical UUID string) has `feature`, when this process remembers their cached
    answer (no round trip, no query); None otherwise: user_entitlements answers."""
    return cache.entitled_remembered(user_id=user_id, feature=feature)


def users_entitled(*, user_ids: Collection[uuid.UUID], feature: str) -> dict[uuid.UUID, bool]:
    """For each user, whether they have `feature`; a constant number of cache round trips and
    database queries (two) whatever the number of users."""
    found = users_entitled_by_id(user_ids=[str(user_id) for user_id in user_ids], feature=feature)
    return {uuid.UUID(user_id): entitled for user_id, entitled in found.items()}


def users_entitled_by_id(*, user_ids: Collection[str], feature: str) -> dict[str, bool]:
    """users_entitled for ids as canonical UUID strings (lower case, hyphens), answered by the same
    strings: the bulk check's path, with no UUID object made for a cached user."""
    return cache.entitled_many(user_ids=user_ids, feature=feature, load=entitlements_from_database)


def entitlement_explain(*, user_id: uuid.UUID, feature_key: str) -> list[Reason]:
    """Support's "why does this user have (or not have) this feature": every subscription of the user
    and of their family owner, whatever its status, with the rule's verdict on each."""
    memberships = [
        MembershipFacts(user_id=user_id, owner_user_id=owner, seat=seat)
        for owner, seat in _with_seat(
            FamilyMembership.objects.filter(user_id=user_id, role=MembershipRole.MEMBER)
        ).values_list("group__owner_user_id", "seat")
    ]
    owners = {membership.owner_user_id for membership in memberships}
    rows = _subscriptions_of({user_id, *owners}, entitling_only=False).values_list(*_SUBSCRIPTION_COLUMNS)
    return explain(
        user_id=user_id,
        feature_key=feature_key,
        subscriptions=_subscription_facts(rows),
        memberships=memberships,
        now=timezone.now(),
        past_due_grace=past_due_grace(),
    )


# --- Families -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyDetail:
    id: uuid.UUID
    owner_user_id: uuid.UUID
    status: str
    seats: int
    members: list[FamilyMembership]
    suspended: list[uuid.UUID]  # members beyond the seats (resolution.holds_seat)
    invitations: list[FamilyInvitation]  # pending ones, for the owner; empty for members
    created_at: datetime


def family_detail(*, user_id: uuid.UUID) -> FamilyDetail | None:
    """The family the user owns or belongs to, as its owner or a member sees it; None if none."""
    group = FamilyGroup.objects.filter(memberships__user_id=user_id).first()
    if group is None:
        return None
    is_owner = group.owner_user_id == user_id
    invitations = (
        list(
            group.invitations.filter(status=InvitationStatus.PENDING, expires_at__gt=timezone.now()).order_by(
                "created_at"
            )
        )
        if is_owner
        else []
    )
    seats = family_seats_of(owner_user_id=group.owner_user_id)
    members = list(group.memberships.order_by("joined_at", "id"))
    in_line = [member.user_id for member in members if member.role == MembershipRole.MEMBER]
    return FamilyDetail(
        id=group.id,
        owner_user_id=group.owner_user_id,
        status=group.status,
        seats=seats,
        members=members,
        suspended=in_line[seats:],
        invitations=invitations,
        created_at=group.created_at,
    )


def family_seats_of(*, owner_user_id: uuid.UUID) -> int:
    """Seats besides the owner that the owner's access-granting family plans give (0: none)."""
    rows = _subscriptions_of({owner_user_id}).values_list(*_SUBSCRIPTION_COLUMNS)
    return family_seats(
        _subscription_facts(rows), owner_user_id=owner_user_id, now=timezone.now(), past_due_grace=past_due_grace()
    )
