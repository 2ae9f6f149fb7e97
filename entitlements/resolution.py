"""The entitlement rules as one pure function: plain values in, plain values out, no ORM, no clock.

A user's features are
- the features of the plans of their own subscriptions that grant access, and
- while they are a member of someone's family, the features of that owner's *family* plans
  (`family_seats > 0`) whose subscriptions grant access.

A subscription grants access while it is active or trialing, and while it is past_due within the
grace period. "Until when" matters as much as "whether": each grant carries the moment it ends by
itself if nothing else happens (`None`: it renews), so a cached answer can be given a lifetime that
never outlives a grant. See `access_until`.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

ACTIVE: Final = "active"
TRIALING: Final = "trialing"
PAST_DUE: Final = "past_due"
# Statuses that can grant access at all (billing's Subscription.ENTITLING, as plain strings).
ENTITLING_STATUSES: Final = frozenset({ACTIVE, TRIALING, PAST_DUE})


class Source(StrEnum):
    OWN = "own"
    FAMILY = "family"


@dataclass(frozen=True)
class SubscriptionFacts:
    """One subscription as the resolver needs it (billing's row, its plan and the plan's features)."""

    user_id: uuid.UUID
    status: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    family_seats: int
    features: frozenset[str]
    subscription_id: str = ""  # for explanations only; the rules never look at it
    plan_code: str = ""  # for explanations only


@dataclass(frozen=True)
class MembershipFacts:
    """`user_id` is a member (not the owner) of the family owned by `owner_user_id`, the `seat`-th to have
    joined it (1: the longest-standing member; by joined_at, then id)."""

    user_id: uuid.UUID
    owner_user_id: uuid.UUID
    seat: int = 1


def holds_seat(subscription: SubscriptionFacts, seat: int) -> bool:
    """The seat rule: a family plan of N seats shares its features with the N longest-standing members; the
    others are suspended (no family features) until a seat frees up (the owner removes someone, someone
    leaves) or the plan grows again. Nothing is stored: the order of joining decides, so a downgrade, an
    upgrade, a removal or a catalog change takes effect wherever entitlements are resolved."""
    return 0 < seat <= subscription.family_seats


@dataclass(frozen=True)
class GrantedFeature:
    key: str
    source: Source
    expires_at: datetime | None  # when the last grant of this key ends by itself; None: it renews


@dataclass(frozen=True)
class Entitlements:
    user_id: uuid.UUID
    features: tuple[GrantedFeature, ...] = ()  # sorted by key, one per key
    # The first moment at which time alone changes this answer (any grant behind it ending); None:
    # only an event can. A cached copy must not be served at or after it.
    valid_until: datetime | None = None
    _keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keys", frozenset(feature.key for feature in self.features))

    @property
    def keys(self) -> frozenset[str]:
        return self._keys

    def has(self, key: str) -> bool:
        return key in self._keys


def access_until(
    subscription: SubscriptionFacts, *, now: datetime, past_due_grace: timedelta
) -> tuple[bool, datetime | None]:
    """Whether the subscription grants access at `now`, and until when it does by itself.

    - active / trialing: yes; it renews (None) unless it is set to cancel at period end, in which
      case it ends at current_period_end (Stripe cancels it then; a late webhook must not extend it);
    - past_due: Stripe moved the period on when the renewal invoice failed, so the unpaid stretch
      began at current_period_start; access lasts `past_due_grace` from there (from the period end
      when the start is unknown); without either date there is nothing to measure the grace from;
    - anything else: no.
    """
    status = subscription.status
    if status in (ACTIVE, TRIALING):
        if subscription.cancel_at_period_end and subscription.current_period_end is not None:
            end = subscription.current_period_end
            return (True, end) if now < end else (False, None)
        return True, None
    if status == PAST_DUE:
        anchor = subscription.current_period_start or subscription.current_period_end
        if anchor is None:
            return False, None
        end = anchor + past_due_grace
        return (True, end) if now < end else (False, None)
    return False, None


def family_seats(
    subscriptions: Iterable[SubscriptionFacts], *, owner_user_id: uuid.UUID, now: datetime, past_due_grace: timedelta
) -> int:
    """How many members (besides the owner) the owner's access-granting family plans allow; 0 means
    the owner has no family plan right now (a group of theirs is suspended)."""
    return max(
        (
            subscription.family_seats
            for subscription in subscriptions
            if subscription.user_id == owner_user_id
            and subscription.family_seats > 0
            and access_until(subscription, now=now, past_due_grace=past_due_grace)[0]
        ),
        default=0,
    )


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two ends, where None (renews) is later than any moment."""
    if a is None or b is None:
        return None
    return max(a, b)


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two ends, where None (never) is later than any moment."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


@dataclass
class _Grants:
    own: dict[str, datetime | None] = field(default_factory=dict)
    family: dict[str, datetime | None] = field(default_factory=dict)
    valid_until: datetime | None = None


def _add(target: dict[str, datetime | None], keys: Iterable[str], until: datetime | None) -> None:
    for key in keys:
        target[key] = _later(target[key], until) if key in target else until


def resolve(
    *,
    user_ids: Iterable[uuid.UUID],
    subscriptions: Iterable[SubscriptionFacts],
    memberships: Iterable[MembershipFacts],
    now: datetime,
    past_due_grace: timedelta,
) -> dict[uuid.UUID, Entitlements]:
    """The effective features of each of `user_ids` (every one gets an answer, possibly empty).

    `subscriptions` must hold those of the users and of their family owners; `memberships` those of
    the users (an owner has none: owning is not being a member). The result depends only on the
    sets given, never on their order.
    """
    wanted = set(user_ids)
    granting: dict[uuid.UUID, list[tuple[SubscriptionFacts, datetime | None]]] = {}
    for subscription in subscriptions:
        active, until = access_until(subscription, now=now, past_due_grace=past_due_grace)
        if active:
            granting.setdefault(subscription.user_id, []).append((subscription, until))
    owners: dict[uuid.UUID, dict[uuid.UUID, int]] = {}  # member -> {owner: their seat}
    for membership in memberships:
        if membership.user_id in wanted and membership.owner_user_id != membership.user_id:
            owners.setdefault(membership.user_id, {})[membership.owner_user_id] = membership.seat

    result = {}
    for user_id in wanted:
        grants = _Grants()
        for subscription, until in granting.get(user_id, ()):
            _add(grants.own, subscription.features, until)
            grants.valid_until = _earlier(grants.valid_until, until)
        for owner_id, seat in owners.get(user_id, {}).items():
            for subscription, until in granting.get(owner_id, ()):
                if holds_seat(subscription, seat):
                    _add(grants.family, subscription.features, until)
                    grants.valid_until = _earlier(grants.valid_until, until)
        result[user_id] = _entitlements(user_id, grants)
    return result


def _entitlements(user_id: uuid.UUID, grants: _Grants) -> Entitlements:
    features = []
    for key in sorted(grants.own.keys() | grants.family.keys()):
        source = Source.OWN if key in grants.own else Source.FAMILY
        if key in grants.own and key in grants.family:
            expires_at = _later(grants.own[key], grants.family[key])
        else:
            expires_at = (grants.own if key in grants.own else grants.family)[key]
        features.append(GrantedFeature(key=key, source=source, expires_at=expires_at))
    return Entitlements(user_id=user_id, features=tuple(features), valid_until=grants.valid_until)


# --- Explanations (support's "why does this user have feature X") ------------------------------


@dataclass(frozen=True)
class Reason:
    """One subscription considered for a user and a feature, and what it contributed."""

    source: Source
    subscription_id: str
    plan_code: str
    status: str
    grants: bool
    until: datetime | None
    detail: str


def explain(
    *,
    user_id: uuid.UUID,
    feature_key: str,
    subscriptions: Iterable[SubscriptionFacts],
    memberships: Iterable[MembershipFacts],
    now: datetime,
    past_due_grace: timedelta,
) -> list[Reason]:
    """Every subscription that could have given `feature_key` to the user, each with its verdict.

    Uses exactly the rules of `resolve` (access_until, family seats), so the verdicts agree with it.
    """
    seats = {m.owner_user_id: m.seat for m in memberships if m.user_id == user_id and m.owner_user_id != user_id}
    owners = set(seats)
    reasons = []
    for subscription in sorted(subscriptions, key=lambda s: (s.user_id != user_id, s.subscription_id)):
        if subscription.user_id == user_id:
            source = Source.OWN
        elif subscription.user_id in owners:
            source = Source.FAMILY
        else:
            continue
        active, until = access_until(subscription, now=now, past_due_grace=past_due_grace)
        seat = seats.get(subscription.user_id, 0)
        shared = source is Source.OWN or holds_seat(subscription, seat)
        reasons.append(
            Reason(
                source=source,
                subscription_id=subscription.subscription_id,
                plan_code=subscription.plan_code,
                status=subscription.status,
                grants=active and shared and feature_key in subscription.features,
                until=until if active else None,
                detail=_verdict(subscription, source, feature_key, active, until, seat=seat),
            )
        )
    return reasons


def _verdict(
    subscription: SubscriptionFacts, source: Source, key: str, grants: bool, until: datetime | None, *, seat: int = 0
) -> str:
    whose = "their own subscription" if source is Source.OWN else "their family owner's subscription"
    if key not in subscription.features:
        return f"{whose}: plan {subscription.plan_code!r} does not include {key!r}"
    if source is Source.FAMILY and subscription.family_seats <= 0:
        return f"{whose}: plan {subscription.plan_code!r} is not a family plan"
    if source is Source.FAMILY and not holds_seat(subscription, seat):
        return (
            f"{whose}: member {seat} of a plan with {subscription.family_seats} seat(s): suspended until a seat "
            "frees up or the plan grows"
        )
    if not grants:
        if subscription.status == PAST_DUE:
            return f"{whose}: past_due beyond the grace period"
        if subscription.status in (ACTIVE, TRIALING):
            return f"{whose}: set to cancel at period end, and the period has ended"
        return f"{whose}: status {subscription.status!r} grants no access"
    return f"{whose} grants {key!r} " + (f"until {until.isoformat()}" if until else "while it renews")
