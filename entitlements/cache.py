"""The entitlement cache: per-user entries keyed by (user, version), in Django's cache (Redis).

Keys
- `ver:<user>` holds the user's current version, a random token. Every change that affects the user
  replaces it after commit (`versions_bump`), so entries written under older tokens are never read
  again (they expire by their TTL).
- `val:<user>:<token>` holds the user's resolved entitlements — denials included (an empty set).

Why this never serves a stale answer, grant or denial
- A reader reads the version *before* it reads the database. If a change commits and bumps after
  that, the reader's entry lands under the old token, which nobody reads any more.
- A user without a version (never changed, expired, evicted, flushed) gets a fresh random token
  with SET NX before the database is read; if another process set one first, this reader's result
  is not cached at all. Tokens are random, so a lost version can never resurrect an old entry, and
  a bump racing a first read can never be overwritten.
- An entry's timeout is the TTL, or less: it ends before the first grant in it ends by itself
  (`Entitlements.valid_until`), and a hit past that moment is treated as a miss anyway.
- After a bump fails (Redis unreachable at commit), a Celery task retries it; the TTL is the last
  backstop.

Round trips, whatever the number of users: one MGET of versions; one SET NX pipeline for users
without a version; one MGET of entries; one pipeline writing the missed entries. The database is
asked once, for all misses together (two queries).

Any cache failure answers from the database, is logged and counted
(`payments_entitlements_cache_unavailable_total`); it never fails the request. After a few failures
in a row the process stops trying Redis for a few seconds (`_breaker`), so a blackholed Redis costs
one socket timeout now and then instead of one per check.
"""

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone
from prometheus_client import Counter

from entitlements.resolution import Entitlements, GrantedFeature, Source
from payments_project.cache_serializer import UnreadableCacheValue

log = structlog.get_logger(__name__)

KEY_PREFIX = "entitlements:2"  # bump the digit when the entry format changes (2: JSON, not pickles)
# Versions outlive entries; one that expires costs a single miss (a fresh token is drawn).
VERSION_TTL_SECONDS = 7 * 24 * 3600

LOOKUPS = Counter(
    "payments_entitlements_cache_lookups_total", "Users looked up in the entitlement cache, by outcome", ["outcome"]
)
UNAVAILABLE = Counter(
    "payments_entitlements_cache_unavailable_total",
    "Entitlement cache operations that failed or were skipped; reads were answered from the database",
    ["operation", "reason"],
)


class Loader(Protocol):
    def __call__(self, *, user_ids: Collection[uuid.UUID], now: datetime) -> dict[uuid.UUID, Entitlements]: ...


def version_key(user_id: uuid.UUID) -> str:
    return f"{KEY_PREFIX}:ver:{user_id}"


def entry_key(user_id: uuid.UUID, version: str) -> str:
    return f"{KEY_PREFIX}:val:{user_id}:{version}"


def _new_version() -> str:
    return uuid.uuid4().hex


# --- Entry format: plain lists and integers (the cache stores JSON), times as integer microseconds --

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
Entry = tuple[int | None, tuple[tuple[str, str, int | None], ...]]


def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + micros * _MICROSECOND


def encode(entitlements: Entitlements) -> Entry:
    features = tuple((f.key, f.source.value, _micros(f.expires_at)) for f in entitlements.features)
    return _micros(entitlements.valid_until), features


_SOURCES = {source.value: source for source in Source}  # a dict lookup: Source(value) is slower


def decode(user_id: uuid.UUID, entry: Entry) -> Entitlements:
    valid_until, features = entry
    return Entitlements(
        user_id=user_id,
        features=tuple(
            GrantedFeature(key=key, source=_SOURCES[source], expires_at=_moment(expires))
            for key, source, expires in features
        ),
        valid_until=_moment(valid_until),
    )


def entry_timeout(entitlements: Entitlements, *, now: datetime) -> int:
    """Seconds to keep an entry: the TTL, cut to end before the first grant in it ends (0: don't)."""
    ttl = int(settings.ENTITLEMENTS_CACHE_TTL_SECONDS)
    if entitlements.valid_until is None:
        return ttl
    return max(0, min(ttl, int((entitlements.valid_until - now).total_seconds())))


# --- The few cache operations needed, each one round trip ---------------------------------------


class _Store:
    """Django's cache API, plus SET NX and per-key timeouts for many keys in one round trip.

    Django has no `add_many`, and its `set_many` takes one timeout for all keys; with Redis both are
    one pipeline on the backend's own client, serializer and key function. Other backends (the local
    memory cache of `make run`) fall back to one call per key: they make no network round trips.
    """

    def __init__(self, backend: BaseCache) -> None:
        self.backend = backend

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """MGET. With Redis, keys are made without Django's per-character memcached-safety check:
        ours are a prefix, UUIDs and hex tokens, and a bulk check makes 2000 of them."""
        if not keys:
            return {}
        if isinstance(self.backend, RedisCache):
            client = self.backend._cache.get_client()
            loads = self.backend._cache._serializer.loads  # type: ignore[attr-defined]
            values = client.mget([self.backend.make_key(key) for key in keys])
            found = {}
            for key, value in zip(keys, values, strict=True):
                if value is None:
                    continue
                try:
                    found[key] = loads(value)
                except UnreadableCacheValue:  # not JSON (a planted pickle?): a miss, never unpickled
                    log.warning("entitlements_cache_value_unreadable", key=key)
            return found
        return self.backend.get_many(keys)

    def add_many(self, values: Mapping[str, Any], timeout: int) -> set[str]:
        """SET NX each key; returns the keys that were set (the others already existed)."""
        if not values:
            return set()
        if isinstance(self.backend, RedisCache):
            client = self.backend._cache.get_client(write=True)
            serializer = self.backend._cache._serializer  # type: ignore[attr-defined]
            pipeline = client.pipeline(transaction=False)
            for key, value in values.items():
                pipeline.set(self.backend.make_and_validate_key(key), serializer.dumps(value), ex=timeout, nx=True)
            return {key for key, done in zip(values, pipeline.execute(), strict=True) if done}
        return {key for key, value in values.items() if self.backend.add(key, value, timeout)}

    def set_each(self, values: Mapping[str, tuple[Any, int]]) -> None:
        """SET each key with its own timeout (seconds, > 0)."""
        if not values:
            return
        if isinstance(self.backend, RedisCache):
            client = self.backend._cache.get_client(write=True)
            serializer = self.backend._cache._serializer  # type: ignore[attr-defined]
            pipeline = client.pipeline(transaction=False)
            for key, (value, timeout) in values.items():
                pipeline.set(self.backend.make_and_validate_key(key), serializer.dumps(value), ex=timeout)
            pipeline.execute()
            return
        for key, (value, timeout) in values.items():
            self.backend.set(key, value, timeout)

    def set_many(self, values: Mapping[str, Any], timeout: int) -> None:
        self.backend.set_many(dict(values), timeout)


def _store() -> _Store:
    return _Store(caches["default"])


class _Breaker:
    """After `fail_max` cache failures in a row, skip the cache for `reset_seconds`; after that one
    trial, and a single failure re-opens it.

    Not pybreaker: its CircuitBreaker.call holds a lock around the call, which would serialise every
    thread's Redis round trip in a process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._tripped = False

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def succeeded(self) -> None:
        if self._failures or self._tripped:
            with self._lock:
                self._failures, self._tripped = 0, False

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._tripped or self._failures >= settings.ENTITLEMENTS_CACHE_BREAKER_FAIL_MAX:
                self._open_until = time.monotonic() + settings.ENTITLEMENTS_CACHE_BREAKER_RESET_SECONDS
                self._failures, self._tripped = 0, True
                log.warning(
                    "entitlements_cache_breaker_open", seconds=settings.ENTITLEMENTS_CACHE_BREAKER_RESET_SECONDS
                )

    def reset(self) -> None:
        with self._lock:
            self._failures, self._open_until, self._tripped = 0, 0.0, False


_breaker = _Breaker()


@receiver(setting_changed)
def _reset_breaker(*, setting: str, **kwargs: Any) -> None:
    # Another cache (tests pointing it at a dead port and back) starts with a clean slate.
    if setting == "CACHES" or setting.startswith("ENTITLEMENTS_CACHE_BREAKER"):
        _breaker.reset()


class _Skipped(Exception):
    """The breaker is open: the cache was not tried."""


def _guarded(operation: str, func: Callable[[], Any]) -> Any:
    """Run a cache operation; any failure is logged, counted and re-raised for the caller's fallback."""
    if _breaker.is_open():
        UNAVAILABLE.labels(operation, "breaker_open").inc()
        raise _Skipped
    try:
        result = func()
    except Exception as exc:  # whatever the cache raises, the caller answers from the database
        _breaker.failed()
        UNAVAILABLE.labels(operation, "error").inc()
        log.warning("entitlements_cache_unavailable", operation=operation, error=repr(exc))
        raise
    _breaker.succeeded()
    return result


# --- Reads --------------------------------------------------------------------------------------


def _read(
    store: _Store, user_ids: list[uuid.UUID], now: datetime
) -> tuple[dict[uuid.UUID, Entitlements], dict[uuid.UUID, str]]:
    """The cached entitlements found, and the version under which each missing user may be cached."""
    versions_found = store.get_many([version_key(user_id) for user_id in user_ids])
    versions: dict[uuid.UUID, str] = {}
    unversioned: dict[str, tuple[uuid.UUID, str]] = {}
    for user_id in user_ids:
        version = versions_found.get(version_key(user_id))
        if isinstance(version, str):
            versions[user_id] = version
        else:
            unversioned[version_key(user_id)] = (user_id, _new_version())
    if unversioned:
        # SET NX before the database is read: a bump that lands first wins, and then this reader
        # does not cache (it does not know the token the bump wrote).
        added = store.add_many({key: token for key, (_, token) in unversioned.items()}, VERSION_TTL_SECONDS)
        versions.update({user_id: token for key, (user_id, token) in unversioned.items() if key in added})
    found: dict[uuid.UUID, Entitlements] = {}
    readable = [user_id for user_id in user_ids if version_key(user_id) not in unversioned]
    if readable:
        entries = store.get_many([entry_key(user_id, versions[user_id]) for user_id in readable])
        for user_id in readable:
            entry = entries.get(entry_key(user_id, versions[user_id]))
            if entry is None:
                continue
            try:
                entitlements = decode(user_id, entry)
            except (TypeError, ValueError, KeyError):  # an entry of another shape: a miss, rewritten below
                continue
            if entitlements.valid_until is None or now < entitlements.valid_until:
                found[user_id] = entitlements
    return found, versions


def entitlements_get_many(*, user_ids: Collection[uuid.UUID], load: Loader) -> dict[uuid.UUID, Entitlements]:
    """Every user's entitlements: from the cache where it has them, the rest from `load` in one go
    (then cached). A cache failure or outage answers everything from `load`."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    now = timezone.now()
    store = _store()
    try:
        found, versions = _guarded("read", lambda: _read(store, ids, now))
    except Exception:
        return load(user_ids=ids, now=now)
    missing = [user_id for user_id in ids if user_id not in found]
    LOOKUPS.labels("hit").inc(len(found))
    if not missing:
        return found
    LOOKUPS.labels("miss").inc(len(missing))
    loaded = load(user_ids=missing, now=now)
    found.update(loaded)
    entries = {}
    for user_id in missing:
        timeout = entry_timeout(loaded[user_id], now=now)
        if user_id in versions and timeout > 0:
            entries[entry_key(user_id, versions[user_id])] = (encode(loaded[user_id]), timeout)
    if entries:
        # A failed write is counted and logged by _guarded; the answer stands without the cache.
        with contextlib.suppress(Exception):
            _guarded("write", lambda: store.set_each(entries))
    return found


# --- Invalidation -------------------------------------------------------------------------------


def versions_bump(*, user_ids: Collection[uuid.UUID]) -> None:
    """Give each user a new version (one round trip); raises if the cache is unreachable.

    Never skipped by the breaker: a bump that is not even tried could leave a stale entry readable
    once Redis answers again.
    """
    if user_ids:
        _store().set_many({version_key(user_id): _new_version() for user_id in user_ids}, VERSION_TTL_SECONDS)
