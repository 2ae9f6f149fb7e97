"""The entitlement cache: hits, misses, invalidation on commit, expiry, and Redis outages."""

import time
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

import pytest
import redis
import time_machine
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from billing.models import Subscription
from entitlements import cache, selectors
from entitlements.resolution import Entitlements
from entitlements.services import entitlements_refresh
from payments_project.redis_cache import TrackedReads
from tests.entitlements.conftest import CountingConnectionPool, cache_at
from tests.entitlements.factories import family_of, plan_with, subscribe
from tests.support.proxy import TcpProxy, closed_port
from tests.support.worker import celery_worker, wait_until


def unavailable(operation: str, reason: str) -> float:
    labels = {"operation": operation, "reason": reason}
    return REGISTRY.get_sample_value("payments_entitlements_cache_unavailable_total", labels) or 0.0


def purchase(user_id: uuid.UUID, *features: str, **kwargs: object) -> Subscription:
    """A subscription change as the webhook processor commits it: billing row + refresh, one transaction."""
    with transaction.atomic():
        subscription = subscribe(user_id, plan_with(features, **kwargs))  # type: ignore[arg-type]
        entitlements_refresh(user_ids={user_id})
    return subscription


def _redis_port() -> int:
    return int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])


def _redis_db() -> str:
    return settings.REDIS_URL.rsplit("/", 1)[1]


def entitled(user_id: uuid.UUID, feature: str) -> bool:
    return selectors.user_entitlements(user_id=user_id).has(feature)


# --- hits and misses ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_first_check_reads_the_database_and_the_next_one_only_the_cache(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))

    with django_assert_num_queries(2):
        assert entitled(user, "hd")
    with django_assert_num_queries(0):
        assert entitled(user, "hd")
        assert not entitled(user, "4k")


@pytest.mark.django_db
def test_at_most_two_queries_load_the_inputs_for_any_number_of_users_families_included(
    django_assert_num_queries,
) -> None:  # type: ignore[no-untyped-def]
    family_plan, solo_plan = plan_with(["hd", "kids"], family_seats=3), plan_with(["studio"])
    users = []
    for _ in range(20):
        owner, member = uuid.uuid4(), uuid.uuid4()
        subscribe(owner, family_plan)
        subscribe(member, solo_plan)
        family_of(owner, member)
        users += [owner, member]

    with django_assert_num_queries(2):
        found = selectors.entitlements_from_database(user_ids=users)

    assert all(found[user].keys == {"hd", "kids"} for user in users[0::2])
    assert all(found[user].keys == {"hd", "kids", "studio"} for user in users[1::2])


@pytest.mark.django_db
def test_a_bulk_check_costs_the_same_queries_and_round_trips_for_one_user_as_for_a_thousand(
    round_trips: type[CountingConnectionPool],
) -> None:
    plan = plan_with(["hd"])
    thousand = [uuid.uuid4() for _ in range(1000)]
    for user in thousand[::10]:
        subscribe(user, plan)
    one = [uuid.uuid4()]

    def cost(users: list[uuid.UUID]) -> tuple[int, int, int]:
        round_trips.checkouts = 0
        with CaptureQueriesContext(connection) as queries:
            result = selectors.users_entitled(user_ids=users, feature="hd")
        return len(queries), round_trips.checkouts, sum(result.values())

    cold_one, cold_thousand = cost(one), cost(thousand)
    warm_one, warm_thousand = cost(one), cost(thousand)

    # cold: the read script (versions set), entries written in one pipeline; the database twice
    assert cold_one[:2] == cold_thousand[:2] == (2, 2)
    # warm: the read script alone; no database
    assert warm_one[:2] == warm_thousand[:2] == (0, 1)
    assert cold_thousand[2] == warm_thousand[2] == 100
    # remembered by this process since the warm read: no round trip either
    assert cost(one) == (0, 0, 0)
    assert cost(thousand) == (0, 0, 100)


@pytest.mark.django_db
def test_a_bulk_check_of_users_partly_remembered_costs_one_round_trip(
    round_trips: type[CountingConnectionPool],
) -> None:
    remembered, cached, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    subscribe(remembered, plan_with(["hd"]))
    selectors.users_entitled(user_ids=[remembered, cached], feature="hd")  # cached in Redis
    selectors.users_entitled(user_ids=[remembered], feature="hd")  # read back, and remembered

    round_trips.checkouts = 0
    with CaptureQueriesContext(connection) as queries:
        found = selectors.users_entitled(user_ids=[remembered, cached, unknown], feature="hd")

    assert found == {remembered: True, cached: False, unknown: False}
    # the read script for the two others; the unknown user loaded (two queries) and written (one pipeline)
    assert (len(queries), round_trips.checkouts) == (2, 2)


# --- invalidation -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_denial_is_cached_yet_the_next_check_after_a_purchase_says_yes(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    buyer = uuid.uuid4()
    assert not entitled(buyer, "hd")
    with django_assert_num_queries(0):
        assert not entitled(buyer, "hd")  # the denial is cached

    purchase(buyer, "hd")

    assert entitled(buyer, "hd")


@pytest.mark.django_db(transaction=True)
def test_a_cancellation_takes_the_feature_away_at_the_next_check() -> None:
    buyer = uuid.uuid4()
    subscription = purchase(buyer, "hd")
    assert entitled(buyer, "hd")

    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk).update(status=Subscription.Status.CANCELED)
        entitlements_refresh(user_ids={buyer})

    assert not entitled(buyer, "hd")


@pytest.mark.django_db(transaction=True)
def test_the_owners_renewal_reaches_every_members_cached_answer() -> None:
    owner, member = uuid.uuid4(), uuid.uuid4()
    family_of(owner, member)
    assert not entitled(member, "kids")

    purchase(owner, "kids", family_seats=2)

    assert entitled(member, "kids")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seen_before", [True, False], ids=["user with a version", "user without a version"])
def test_a_check_racing_a_purchase_never_leaves_the_old_denial_in_the_cache(seen_before: bool) -> None:
    """The reader reads the database before the purchase commits and writes the cache after its bump."""
    buyer = uuid.uuid4()
    if seen_before:
        purchase(buyer, "unrelated")  # a change: the buyer has a version, and no entry under it yet
        assert caches["default"].get(cache.version_key(buyer))

    def load_then_purchase(*, user_ids: Collection[uuid.UUID], now: datetime) -> dict[uuid.UUID, Entitlements]:
        stale = selectors.entitlements_from_database(user_ids=user_ids, now=now)
        purchase(buyer, "hd")  # commits and bumps while the reader holds its stale answer
        return stale

    racing = cache.entitlements_get_many(user_ids=[buyer], load=load_then_purchase)

    assert not racing[buyer].has("hd")  # the reader's own answer was taken before the purchase
    assert entitled(buyer, "hd")  # ...but it was not left in the cache for the next check


# --- process memory (TrackedReads) ---------------------------------------------------------------


def _remembered(user_id: uuid.UUID, feature: str, round_trips: type[CountingConnectionPool]) -> bool:
    """A check answered from this process's memory: no round trip to Redis."""
    round_trips.checkouts = 0
    answer = entitled(user_id, feature)
    assert round_trips.checkouts == 0, "not answered from memory"
    return answer


def _kill_tracking_connections() -> None:
    """Close, from Redis's side, the connections that receive this database's invalidations."""
    redis = caches["default"]._cache.get_client()  # type: ignore[attr-defined]
    for client in redis.client_list():
        if "t" in client["flags"] and client["db"] == _redis_db():
            redis.client_kill_filter(_id=client["id"])


@pytest.mark.django_db(transaction=True)
def test_a_cancellation_is_seen_at_the_next_check_though_the_grant_was_answered_from_memory(
    round_trips: type[CountingConnectionPool],
) -> None:
    buyer = uuid.uuid4()
    subscription = purchase(buyer, "hd")
    assert entitled(buyer, "hd")  # read from the database, then written to Redis
    assert entitled(buyer, "hd")  # read back from Redis, and remembered
    assert _remembered(buyer, "hd", round_trips)

    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk).update(status=Subscription.Status.CANCELED)
        entitlements_refresh(user_ids={buyer})

    assert not entitled(buyer, "hd")


@pytest.mark.django_db(transaction=True)
def test_a_purchase_is_seen_at_the_next_check_though_the_denial_was_answered_from_memory(
    round_trips: type[CountingConnectionPool],
) -> None:
    buyer = uuid.uuid4()
    assert not entitled(buyer, "hd")
    assert not entitled(buyer, "hd")
    assert not _remembered(buyer, "hd", round_trips)

    purchase(buyer, "hd")

    assert entitled(buyer, "hd")


def from_memory(user_id: uuid.UUID, feature: str) -> bool | None:
    return selectors.user_entitled_remembered(user_id=str(user_id), feature=feature)


@pytest.mark.django_db(transaction=True)
def test_a_check_from_memory_alone_answers_remembered_users_and_sees_a_cancellation_at_once(
    round_trips: type[CountingConnectionPool],
) -> None:
    buyer = uuid.uuid4()
    subscription = purchase(buyer, "hd")
    assert from_memory(buyer, "hd") is None  # never read: not remembered
    # Read from the database and written to Redis, then read back and remembered (a later read, if
    # Redis's push of the write lands in between)
    assert wait_until(lambda: entitled(buyer, "hd") and from_memory(buyer, "hd") is not None, timeout=5)

    round_trips.checkouts = 0
    answers = from_memory(buyer, "hd"), from_memory(buyer, "4k"), from_memory(buyer, "h")
    assert (answers, round_trips.checkouts) == ((True, False, False), 0)

    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk).update(status=Subscription.Status.CANCELED)
        entitlements_refresh(user_ids={buyer})

    assert from_memory(buyer, "hd") is None  # the new version is not remembered: the full check reads it
    assert not entitled(buyer, "hd")


@pytest.mark.django_db(transaction=True)
def test_a_check_from_memory_alone_never_serves_a_grant_past_its_end(
    round_trips: type[CountingConnectionPool],
) -> None:
    user = uuid.uuid4()
    end = timezone.now() + timedelta(seconds=90)
    subscribe(user, plan_with(["hd"]), period_end=end, cancel_at_period_end=True)
    assert wait_until(lambda: entitled(user, "hd") and from_memory(user, "hd") is True, timeout=5)

    with time_machine.travel(end + timedelta(seconds=1)):  # Redis, and this process, still hold the entry
        assert from_memory(user, "hd") is None
        assert not entitled(user, "hd")


@pytest.mark.django_db(transaction=True)
def test_when_the_connection_told_of_changes_is_lost_what_was_remembered_is_forgotten(
    round_trips: type[CountingConnectionPool],
) -> None:
    buyer = uuid.uuid4()
    subscription = purchase(buyer, "hd")
    assert entitled(buyer, "hd")
    assert entitled(buyer, "hd")
    assert _remembered(buyer, "hd", round_trips)

    _kill_tracking_connections()  # the cancellation's invalidation will never reach this process
    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk).update(status=Subscription.Status.CANCELED)
        entitlements_refresh(user_ids={buyer})

    assert not entitled(buyer, "hd")  # the closed connection was noticed: Redis was asked again


@pytest.mark.django_db(transaction=True)
def test_a_process_idle_for_a_while_answers_from_memory_once_redis_has_answered_its_ping(
    round_trips: type[CountingConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TrackedReads, "HEALTH_SECONDS", 0.1)
    buyer = uuid.uuid4()
    subscription = purchase(buyer, "hd")
    assert entitled(buyer, "hd")
    assert entitled(buyer, "hd")
    time.sleep(0.2)
    assert _remembered(buyer, "hd", round_trips)  # sends a PING (the last PONG is old) ...
    time.sleep(0.02)
    assert _remembered(buyer, "hd", round_trips)  # ... and reads its PONG: none is in flight any more

    time.sleep(0.5)  # no check, so no PONG, for more than 2 x HEALTH_SECONDS
    assert _remembered(buyer, "hd", round_trips)  # the PING went on the tracking connection, not the pool's

    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk).update(status=Subscription.Status.CANCELED)
        entitlements_refresh(user_ids={buyer})
    time.sleep(0.5)
    assert not entitled(buyer, "hd")  # the invalidation came in before the PONG


@pytest.mark.django_db
def test_a_flushed_redis_forgets_what_the_process_remembered(round_trips: type[CountingConnectionPool]) -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    assert entitled(user, "hd")
    assert entitled(user, "hd")
    assert _remembered(user, "hd", round_trips)

    caches["default"].clear()  # FLUSHDB

    round_trips.checkouts = 0
    assert entitled(user, "hd")
    assert round_trips.checkouts > 0


@pytest.mark.django_db
def test_a_flush_of_another_database_on_the_server_keeps_what_the_process_remembered() -> None:
    # given: the cache in another database of the server than the test's own (which this test flushes;
    # the other may be in use: only this test's keys are written there, and deleted)
    databases = int(caches["default"]._cache.get_client().config_get("databases")["databases"])  # type: ignore[attr-defined]
    cache_db = (int(_redis_db()) + 1) % databases
    cache_url = f"{settings.REDIS_URL.rsplit('/', 1)[0]}/{cache_db}"
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    with override_settings(CACHES=cache_at(cache_url, pool_class=CountingConnectionPool)):
        try:
            assert entitled(user, "hd")
            assert entitled(user, "hd")
            assert _remembered(user, "hd", CountingConnectionPool)

            # when: Redis pushes "everything changed" to every tracking connection, whichever database
            # was flushed
            redis.Redis.from_url(settings.REDIS_URL).flushdb()

            # then: this database's keys were not touched, so neither is what the process remembered (a
            # flush of the cache's own database forgets it: the test above)
            assert _remembered(user, "hd", CountingConnectionPool)
        finally:
            client = caches["default"]._cache.get_client()  # type: ignore[attr-defined]
            for key in client.scan_iter(match=f"*{user}*"):  # only this test's keys: the database may be in use
                client.delete(key)


# --- expiry -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_cached_grant_ends_when_the_subscription_does_even_if_redis_still_holds_it() -> None:
    user = uuid.uuid4()
    end = timezone.now() + timedelta(seconds=90)
    subscribe(user, plan_with(["hd"]), period_end=end, cancel_at_period_end=True)

    assert entitled(user, "hd")
    version = caches["default"].get(cache.version_key(user))
    redis = caches["default"]._cache.get_client()  # type: ignore[attr-defined]
    ttl = redis.ttl(caches["default"].make_key(cache.entry_key(user, version)))
    assert 0 < ttl <= 90

    with time_machine.travel(end + timedelta(seconds=1)):
        assert not entitled(user, "hd")


@pytest.mark.django_db
@override_settings(ENTITLEMENTS_CACHE_TTL_SECONDS=120)
def test_entries_live_for_the_configured_ttl() -> None:
    user = uuid.uuid4()
    assert not entitled(user, "hd")

    version = caches["default"].get(cache.version_key(user))
    redis = caches["default"]._cache.get_client()  # type: ignore[attr-defined]
    assert 110 < redis.ttl(caches["default"].make_key(cache.entry_key(user, version))) <= 120


# --- Redis outages ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_with_redis_down_checks_are_answered_from_the_database_and_counted() -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    before = unavailable("read", "error")

    with override_settings(CACHES=cache_at(f"redis://127.0.0.1:{closed_port()}/0")):
        assert entitled(user, "hd")
        assert not entitled(user, "4k")

    assert unavailable("read", "error") == before + 2


@pytest.mark.django_db
@override_settings(ENTITLEMENTS_CACHE_BREAKER_FAIL_MAX=2, ENTITLEMENTS_CACHE_BREAKER_RESET_SECONDS=60)
def test_after_repeated_cache_failures_the_process_stops_trying_redis_for_a_while() -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    errors, skipped = unavailable("read", "error"), unavailable("read", "breaker_open")

    with (
        TcpProxy(_redis_port()) as proxy,
        override_settings(CACHES=cache_at(f"redis://127.0.0.1:{proxy.port}/{_redis_db()}")),
    ):
        proxy.cut()
        for _ in range(4):
            assert entitled(user, "hd")
        proxy.restore()
        assert entitled(user, "hd")  # Redis is back, but the breaker still skips it

    assert unavailable("read", "error") == errors + 2
    assert unavailable("read", "breaker_open") == skipped + 3


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_bump_that_fails_at_commit_is_counted_and_retried_by_a_worker_until_redis_answers() -> None:
    buyer, direct = uuid.uuid4(), settings.REDIS_URL
    with TcpProxy(_redis_port()) as proxy:
        through_proxy = f"redis://127.0.0.1:{proxy.port}/{_redis_db()}"
        # The web process and the worker both reach Redis through the proxy.
        with override_settings(CACHES=cache_at(through_proxy), REDIS_URL=through_proxy), celery_worker(["default"]):
            assert not entitled(buyer, "hd")  # a cached denial
            before = unavailable("bump", "error")

            proxy.cut()
            purchase(buyer, "hd")  # commits; the bump cannot reach Redis, a retry task is queued

            assert unavailable("bump", "error") == before + 1
            with override_settings(CACHES=cache_at(direct)):
                assert not entitled(buyer, "hd")  # the stale denial is still in Redis: the bump is pending

            proxy.restore()
            assert wait_until(lambda: entitled(buyer, "hd"), timeout=60)


# --- the bulk check, decided inside Redis -------------------------------------------------------


def entitled_in_bulk(user_ids: list[uuid.UUID], feature: str) -> dict[uuid.UUID, bool]:
    return selectors.users_entitled(user_ids=user_ids, feature=feature)


@pytest.mark.django_db
def test_the_bulk_check_answers_cached_users_as_the_single_check_does(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    family_plan = plan_with(["hd", "kids"], family_seats=2)
    owner, member, solo, nobody = (uuid.uuid4() for _ in range(4))
    subscribe(owner, family_plan)
    family_of(owner, member)
    subscribe(solo, plan_with(["hd"]), period_end=timezone.now() + timedelta(days=3), cancel_at_period_end=True)
    users = [owner, member, solo, nobody]
    expected = {user: entitled(user, "kids") for user in users}  # cached by the single check

    with django_assert_num_queries(0):
        assert entitled_in_bulk(users, "kids") == expected == {owner: True, member: True, solo: False, nobody: False}
        assert entitled_in_bulk(users, "hd") == {owner: True, member: True, solo: True, nobody: False}
        assert entitled_in_bulk(users, "h") == dict.fromkeys(users, False)  # a prefix of a key is not the key


@pytest.mark.django_db
def test_the_bulk_check_never_serves_a_cached_grant_past_its_end() -> None:
    user = uuid.uuid4()
    end = timezone.now() + timedelta(seconds=90)
    subscribe(user, plan_with(["hd"]), period_end=end, cancel_at_period_end=True)
    assert entitled_in_bulk([user], "hd") == {user: True}

    with time_machine.travel(end + timedelta(seconds=1)):  # Redis still holds the entry
        assert entitled_in_bulk([user], "hd") == {user: False}


@pytest.mark.django_db(transaction=True)
def test_a_cancellation_is_seen_at_the_next_bulk_check_though_the_grant_was_answered_from_memory(
    round_trips: type[CountingConnectionPool],
) -> None:
    buyer, other = uuid.uuid4(), uuid.uuid4()
    subscription = purchase(buyer, "hd")
    for _ in range(2):  # read from the database, then back from Redis (and remembered)
        assert entitled_in_bulk([buyer, other], "hd") == {buyer: True, other: False}
    round_trips.checkouts = 0
    assert entitled_in_bulk([buyer, other], "hd") == {buyer: True, other: False}
    assert round_trips.checkouts == 0, "not answered from memory"

    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk).update(status=Subscription.Status.CANCELED)
        entitlements_refresh(user_ids={buyer})

    assert entitled_in_bulk([buyer, other], "hd") == {buyer: False, other: False}


@pytest.mark.django_db(transaction=True)
def test_a_purchase_is_seen_at_the_next_bulk_check_though_the_denial_was_answered_from_memory(
    round_trips: type[CountingConnectionPool],
) -> None:
    buyer, other = uuid.uuid4(), uuid.uuid4()
    for _ in range(2):
        assert entitled_in_bulk([buyer, other], "hd") == {buyer: False, other: False}
    round_trips.checkouts = 0
    assert entitled_in_bulk([buyer, other], "hd") == {buyer: False, other: False}
    assert round_trips.checkouts == 0, "not answered from memory"

    purchase(buyer, "hd")

    assert entitled_in_bulk([buyer, other], "hd") == {buyer: True, other: False}


@pytest.mark.django_db(transaction=True)
def test_a_cached_bulk_denial_turns_into_a_grant_after_a_purchase() -> None:
    buyer, other = uuid.uuid4(), uuid.uuid4()
    assert entitled_in_bulk([buyer, other], "hd") == {buyer: False, other: False}

    purchase(buyer, "hd")

    assert entitled_in_bulk([buyer, other], "hd") == {buyer: True, other: False}
