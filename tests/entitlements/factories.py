"""Billing rows through billing's own factories, and family rows, for entitlement tests."""

import uuid
from collections.abc import Iterable
from datetime import datetime

from billing.models import Customer, Feature, Plan, Subscription
from entitlements.models import FamilyGroup, FamilyMembership, MembershipRole
from tests.billing.factories import CustomerFactory, FeatureFactory, PlanFactory, PriceFactory, SubscriptionFactory


def plan_with(features: Iterable[str], *, family_seats: int = 0, code: str = "") -> Plan:
    """A plan granting these feature keys (features are shared by key across plans)."""
    plan: Plan = PlanFactory(family_seats=family_seats, **({"code": code} if code else {}))
    plan.features.set([FeatureFactory(key=key) for key in features])
    return plan


def customer_of(user_id: uuid.UUID) -> Customer:
    customer = Customer.objects.filter(user_id=user_id).first()
    return customer or CustomerFactory(user_id=user_id)


def subscribe(
    user_id: uuid.UUID,
    plan: Plan,
    *,
    status: str = Subscription.Status.ACTIVE,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    cancel_at_period_end: bool = False,
) -> Subscription:
    extra = {}
    if period_start is not None:
        extra["current_period_start"] = period_start
    if period_end is not None:
        extra["current_period_end"] = period_end
    subscription: Subscription = SubscriptionFactory(
        customer=customer_of(user_id),
        price=PriceFactory(plan=plan),
        plan=plan,
        status=status,
        cancel_at_period_end=cancel_at_period_end,
        **extra,
    )
    return subscription


def family_of(owner_user_id: uuid.UUID, *members: uuid.UUID) -> FamilyGroup:
    """A family row set as the services would leave it (owner row included), without the services."""
    group = FamilyGroup.objects.create(owner_user_id=owner_user_id)
    FamilyMembership.objects.create(group=group, user_id=owner_user_id, role=MembershipRole.OWNER)
    for member in members:
        FamilyMembership.objects.create(group=group, user_id=member, role=MembershipRole.MEMBER)
    return group


__all__ = ["Feature", "customer_of", "family_of", "plan_with", "subscribe"]
