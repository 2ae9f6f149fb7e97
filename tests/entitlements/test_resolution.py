"""The pure rules (entitlements.resolution): examples for each rule, hypothesis for the invariants."""

import random
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from entitlements.resolution import (
    Entitlements,
    MembershipFacts,
    Source,
    SubscriptionFacts,
    explain,
    family_seats,
    resolve,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
GRACE = timedelta(days=7)
ALICE, BOB, CHARLIE, DANA = (uuid.UUID(int=n) for n in (1, 2, 3, 4))
STATUSES = ["incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"]


def sub(
    user_id: uuid.UUID,
    *features: str,
    status: str = "active",
    seats: int = 0,
    start: datetime | None = NOW - timedelta(days=10),
    end: datetime | None = NOW + timedelta(days=20),
    cancel_at_period_end: bool = False,
) -> SubscriptionFacts:
    return SubscriptionFacts(
        user_id=user_id,
        status=status,
        current_period_start=start,
        current_period_end=end,
        cancel_at_period_end=cancel_at_period_end,
        family_seats=seats,
        features=frozenset(features),
    )


def run(
    subscriptions: list[SubscriptionFacts],
    memberships: list[MembershipFacts] = (),  # type: ignore[assignment]
    *,
    users: tuple[uuid.UUID, ...] = (ALICE, BOB, CHARLIE, DANA),
    now: datetime = NOW,
) -> dict[uuid.UUID, Entitlements]:
    return resolve(user_ids=users, subscriptions=subscriptions, memberships=memberships, now=now, past_due_grace=GRACE)


def member(user_id: uuid.UUID, owner: uuid.UUID) -> MembershipFacts:
    return MembershipFacts(user_id=user_id, owner_user_id=owner)


# --- examples, one per rule ---------------------------------------------------------------------


def test_an_active_subscription_grants_its_plans_features_with_no_end_while_it_renews() -> None:
    result = run([sub(ALICE, "hd", "offline")])[ALICE]

    assert [(f.key, f.source, f.expires_at) for f in result.features] == [
        ("hd", Source.OWN, None),
        ("offline", Source.OWN, None),
    ]
    assert result.valid_until is None


def test_a_trialing_subscription_grants_like_an_active_one() -> None:
    assert run([sub(ALICE, "hd", status="trialing")])[ALICE].keys == {"hd"}


def test_statuses_that_grant_no_access_grant_nothing() -> None:
    for status in ("incomplete", "incomplete_expired", "canceled", "unpaid", "paused"):
        assert run([sub(ALICE, "hd", status=status)])[ALICE].keys == frozenset(), status


def test_past_due_grants_until_the_grace_period_after_the_unpaid_period_began() -> None:
    began = NOW - timedelta(days=3)
    result = run([sub(ALICE, "hd", status="past_due", start=began)])[ALICE]

    assert result.keys == {"hd"}
    assert result.features[0].expires_at == began + GRACE
    assert result.valid_until == began + GRACE


def test_past_due_beyond_the_grace_period_grants_nothing() -> None:
    assert run([sub(ALICE, "hd", status="past_due", start=NOW - GRACE)])[ALICE].keys == frozenset()
    assert run([sub(ALICE, "hd", status="past_due", start=None, end=None)])[ALICE].keys == frozenset()


def test_a_subscription_set_to_cancel_grants_until_its_period_end_and_not_after() -> None:
    end = NOW + timedelta(days=2)
    ending = sub(ALICE, "hd", end=end, cancel_at_period_end=True)

    assert run([ending])[ALICE].features[0].expires_at == end
    assert run([ending], now=end)[ALICE].keys == frozenset()


def test_a_member_gets_the_owners_family_plan_features_as_family() -> None:
    result = run([sub(ALICE, "hd", "kids", seats=4)], [member(BOB, ALICE)])

    assert [(f.key, f.source) for f in result[BOB].features] == [("hd", Source.FAMILY), ("kids", Source.FAMILY)]
    assert [f.source for f in result[ALICE].features] == [Source.OWN, Source.OWN]


def test_a_member_gets_nothing_from_the_owners_plans_without_family_seats() -> None:
    result = run([sub(ALICE, "hd", seats=4), sub(ALICE, "studio", seats=0)], [member(BOB, ALICE)])

    assert result[BOB].keys == {"hd"}
    assert result[ALICE].keys == {"hd", "studio"}


def test_a_member_loses_the_family_features_when_the_owners_plan_lapses() -> None:
    lapsed = sub(ALICE, "hd", seats=4, status="canceled")

    assert run([lapsed], [member(BOB, ALICE)])[BOB].keys == frozenset()


def test_a_feature_from_both_the_members_own_plan_and_the_family_is_own_and_lasts_as_long_as_the_longer() -> None:
    own_end = NOW + timedelta(days=1)
    result = run(
        [sub(BOB, "hd", end=own_end, cancel_at_period_end=True), sub(ALICE, "hd", seats=2)],
        [member(BOB, ALICE)],
    )[BOB]

    assert [(f.key, f.source, f.expires_at) for f in result.features] == [("hd", Source.OWN, None)]
    assert result.valid_until == own_end  # the answer's shape changes then (the source becomes family)


def test_family_seats_are_those_of_the_owners_best_access_granting_family_plan() -> None:
    subscriptions = [sub(ALICE, "a", seats=2), sub(ALICE, "b", seats=5, status="canceled"), sub(BOB, "c", seats=9)]

    assert family_seats(subscriptions, owner_user_id=ALICE, now=NOW, past_due_grace=GRACE) == 2
    assert family_seats([sub(ALICE, "a", seats=0)], owner_user_id=ALICE, now=NOW, past_due_grace=GRACE) == 0


def test_explain_gives_the_same_verdicts_as_resolve_with_the_reason() -> None:
    subscriptions = [
        sub(ALICE, "hd", seats=3, status="past_due", start=NOW - timedelta(days=30)),
        sub(BOB, "hd", status="canceled"),
        sub(BOB, "offline"),
    ]

    reasons = explain(
        user_id=BOB,
        feature_key="hd",
        subscriptions=subscriptions,
        memberships=[member(BOB, ALICE)],
        now=NOW,
        past_due_grace=GRACE,
    )

    assert [(r.source, r.grants) for r in reasons] == [(Source.OWN, False), (Source.OWN, False), (Source.FAMILY, False)]
    assert [r.detail for r in reasons] == [
        "their own subscription: status 'canceled' grants no access",
        "their own subscription: plan '' does not include 'hd'",
        "their family owner's subscription: past_due beyond the grace period",
    ]
    assert not run(subscriptions, [member(BOB, ALICE)])[BOB].has("hd")


# --- invariants ---------------------------------------------------------------------------------

users = st.sampled_from([ALICE, BOB, CHARLIE, DANA])
offsets = st.none() | st.integers(min_value=-40 * 24, max_value=40 * 24).map(lambda hours: NOW + timedelta(hours=hours))
subscriptions = st.builds(
    SubscriptionFacts,
    user_id=users,
    status=st.sampled_from(STATUSES),
    current_period_start=offsets,
    current_period_end=offsets,
    cancel_at_period_end=st.booleans(),
    family_seats=st.integers(min_value=0, max_value=3),
    features=st.frozensets(st.sampled_from(["hd", "offline", "kids", "studio", "4k"]), max_size=4),
)


@st.composite
def memberships(draw: st.DrawFn) -> list[MembershipFacts]:
    """Families as the database allows them: a member is in one family and is nobody's owner."""
    owners = draw(st.sets(users, max_size=2))
    candidates = [user for user in (ALICE, BOB, CHARLIE, DANA) if user not in owners]
    if not owners:
        return []
    return [member(user, draw(st.sampled_from(sorted(owners)))) for user in candidates if draw(st.booleans())]


@given(st.lists(subscriptions, max_size=8), memberships())
def test_a_member_never_gets_more_than_the_owners_plans(
    subs: list[SubscriptionFacts], families: list[MembershipFacts]
) -> None:
    result = run(subs, families)
    without_families = run(subs)

    for membership in families:
        from_family = {f.key for f in result[membership.user_id].features if f.source == Source.FAMILY}
        owners_own = {f.key for f in result[membership.owner_user_id].features if f.source == Source.OWN}
        assert from_family <= owners_own
        assert result[membership.user_id].keys <= without_families[membership.user_id].keys | owners_own


@given(st.lists(subscriptions, min_size=1, max_size=8), memberships(), st.data())
def test_removing_a_subscription_never_adds_a_feature(
    subs: list[SubscriptionFacts], families: list[MembershipFacts], data: st.DataObject
) -> None:
    removed = data.draw(st.integers(min_value=0, max_value=len(subs) - 1))
    before = run(subs, families)

    after = run(subs[:removed] + subs[removed + 1 :], families)

    for user_id, entitlements in after.items():
        assert entitlements.keys <= before[user_id].keys


@given(st.lists(subscriptions, max_size=8), memberships(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_row_order(
    subs: list[SubscriptionFacts], families: list[MembershipFacts], rng: random.Random
) -> None:
    shuffled_subs, shuffled_families = list(subs), list(families)
    rng.shuffle(shuffled_subs)
    rng.shuffle(shuffled_families)

    assert run(shuffled_subs, shuffled_families) == run(subs, families)
    assert run(subs + subs, families + families) == run(subs, families)  # a row loaded twice counts once


@settings(max_examples=200)
@given(st.lists(subscriptions, max_size=8), memberships(), st.floats(min_value=0, max_value=1, exclude_max=True))
def test_the_answer_holds_until_valid_until_so_a_cached_copy_never_outlives_a_grant(
    subs: list[SubscriptionFacts], families: list[MembershipFacts], fraction: float
) -> None:
    now = run(subs, families)

    for user_id, entitlements in now.items():
        horizon = entitlements.valid_until or NOW + timedelta(days=3650)
        # timedelta * float rounds to the microsecond, which can land on the horizon itself: stay before it
        later = min(NOW + (horizon - NOW) * fraction, horizon - timedelta(microseconds=1))
        assert run(subs, families, now=later)[user_id] == Entitlements(
            user_id=user_id, features=entitlements.features, valid_until=entitlements.valid_until
        )
        for feature in entitlements.features:
            assert (
                entitlements.valid_until is None
                or feature.expires_at is None
                or (entitlements.valid_until <= feature.expires_at)
            )


# --- family seats (issue #14, point 10) -----------------------------------------------------------------


def test_members_beyond_the_plans_seats_get_no_family_features() -> None:
    owner_plan = sub(ALICE, "hd", seats=2)
    families = [MembershipFacts(user_id=u, owner_user_id=ALICE, seat=n) for n, u in enumerate((BOB, CHARLIE, DANA), 1)]

    result = run([owner_plan], families)

    assert [result[u].has("hd") for u in (BOB, CHARLIE, DANA)] == [True, True, False]
    [reason] = explain(
        user_id=DANA, feature_key="hd", subscriptions=[owner_plan], memberships=families, now=NOW, past_due_grace=GRACE
    )
    assert not reason.grants and "member 3 of a plan with 2 seat(s)" in reason.detail


@given(
    st.lists(st.tuples(st.sampled_from(["active", "trialing", "past_due", "canceled"]), st.integers(0, 6)), max_size=3),
    st.integers(min_value=0, max_value=10),
)
def test_never_more_members_with_family_features_than_the_owners_seats(
    owner_plans: list[tuple[str, int]], members: int
) -> None:
    owner = uuid.UUID(int=100)
    users = tuple(uuid.UUID(int=200 + n) for n in range(members))
    subs = [sub(owner, "hd", status=status, seats=seats) for status, seats in owner_plans]
    families = [MembershipFacts(user_id=u, owner_user_id=owner, seat=n) for n, u in enumerate(users, 1)]

    result = run(subs, families, users=(owner, *users))

    granted = [u for u in users if result[u].has("hd")]
    seats = family_seats(subs, owner_user_id=owner, now=NOW, past_due_grace=GRACE)
    assert granted == list(users[:seats])  # the longest-standing ones, and no more than the seats
