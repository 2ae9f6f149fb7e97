"""Redis holds JSON only: a pickle planted in the cache's key space is never executed when the app reads
it (it is a miss, or a cache error the caller survives), and everything the app writes is JSON or a raw
integer (rate-limit counters)."""

import json
import pickle
import uuid
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from entitlements import cache as entitlements_cache
from payments_project.cache_serializer import UnreadableCacheValue
from tests.entitlements.factories import plan_with, subscribe
from tests.support.auth import bearer

EXECUTED: list[str] = []  # what planted pickles managed to run in this process


def _ran(marker: str) -> str:
    EXECUTED.append(marker)
    return marker


class _Planted:
    """A pickle that calls `_ran` when unpickled: what an attacker with write access to Redis would plant."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _ran, (self.marker,)


@pytest.fixture
def raw_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture(autouse=True)
def _nothing_ran_yet() -> None:
    EXECUTED.clear()


def plant(raw_redis: redis.Redis, key: str, marker: str) -> None:
    raw_redis.set(cache.make_key(key), pickle.dumps(_Planted(marker)))


def test_django_caches_read_a_planted_pickle_as_an_error_never_running_it(raw_redis: redis.Redis) -> None:
    plant(raw_redis, "anything", "cache.get")

    with pytest.raises(UnreadableCacheValue):
        cache.get("anything")

    assert EXECUTED == []


def test_the_app_writes_json_and_raw_integers_only(raw_redis: redis.Redis) -> None:
    cache.set("a", {"when": 1.5, "items": [1, "two", None, True]})
    cache.set("n", 41)
    cache.incr("n")

    assert json.loads(raw_redis.get(cache.make_key("a")) or b"") == {"when": 1.5, "items": [1, "two", None, True]}
    assert raw_redis.get(cache.make_key("n")) == b"42"
    assert cache.get("a") == {"when": 1.5, "items": [1, "two", None, True]} and cache.get("n") == 42
    with pytest.raises(TypeError):  # what JSON cannot hold is refused, never pickled
        cache.set("b", object())


@pytest.mark.django_db
def test_entitlement_checks_over_http_survive_planted_pickles_and_leave_only_json(raw_redis: redis.Redis) -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    api = Client(HTTP_AUTHORIZATION=bearer(user))
    assert api.get("/api/v1/entitlements/hd").json() == {"feature": "hd", "entitled": True}  # cached now

    # every value the requests left in Redis (entitlements, rate-limit counters) is JSON or an integer
    keys = raw_redis.keys(f"{settings.CACHES['default']['KEY_PREFIX']}:*")
    assert keys
    for key in keys:
        json.loads(raw_redis.get(key) or b"")  # integers are JSON too

    # given: the user's cached entry, then their version, replaced by pickles
    version = cache.get(entitlements_cache.version_key(user))
    plant(raw_redis, entitlements_cache.entry_key(user, version), "entry")
    first = api.get("/api/v1/entitlements/hd")
    plant(raw_redis, entitlements_cache.version_key(user), "version")
    second = api.get("/api/v1/entitlements/hd")

    # then: right answers from the database; nothing ran
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"feature": "hd", "entitled": True}
    assert EXECUTED == []
