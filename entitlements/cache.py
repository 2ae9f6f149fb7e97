"""The entitlement cache: per-user entries keyed by (user, version), in Django's cache (Redis).

Keys
- `ver:<user>` holds the user's current version, a random integer token. Every change that affects the user
  replaces it after commit (`versions_bump`), so entries written under older tokens are never read
  again (they expire by their TTL).
- `val:<user>:<token>` holds the user's resolved entitlements — denials included (an empty set).

Why this never serves a stale answer, grant or denial
- A reader reads the version *before* it reads the database. If a change commits and bumps after
  that, the reader's entry lands under the old token, which nobody reads any more.
- A user without a version (never changed, expired, evicted, flushed) gets a fresh random token
  before the database is read, in the same atomic script that found no version; a bump that lands
  after it replaces it. Tokens are random, so a lost version can never resurrect an old entry, and
  a bump racing a first read can never be overwritten.
- An entry's timeout is the TTL, or less: it ends before the first grant in it ends by itself
  (`Entitlements.valid_until`), and a hit past that moment is treated as a miss anyway.
- After a bump fails (Redis unreachable at commit), a Celery task retries it; the TTL is the last
  backstop.

Round trips, whatever the number of users: none when this process remembers every version and the
entry under it (below); else one script (EVALSHA) reading every version and the entry under it, and
setting a version where there is none; one pipeline writing the missed entries. The
database is asked once, for all misses together (two queries). The bulk check (`entitled_many`) reads
the same way, user by user (what this process remembers, the read script for the rest), and answers
yes/no from each entry's text (`entitled_in`), so only misses are decoded.

Kept in process memory (issue 18): the versions and entries the read script returned are remembered
by payments_project.redis_cache.TrackedReads, which Redis tells of every change to a key under our
prefixes (a bump, an entry written, expired or evicted, a flush) and which applies what it was told
before every lookup. So a remembered answer is never staler than the delivery of Redis's push: a
bump acknowledged to the process that made it has been pushed to ours too, and our next check reads
it (over a network, one network delay later). The version is still read first, then the entry under
it; a lost or silent connection to Redis forgets everything remembered.

Any cache failure answers from the database, is logged and counted
(`payments_entitlements_cache_unavailable_total`); it never fails the request. After a few failures
in a row the process stops trying Redis for a few seconds (`_breaker`), so a blackholed Redis costs
one socket timeout now and then instead of one per check.
"""

import contextlib
import secrets
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
from payments_project.redis_cache import tracked_reads

log = structlog.get_logger(__name__)

KEY_PREFIX = "entitlements:3"  # bump the digit when the entry format changes (3: text entries)
# Versions outlive entries; one that expires costs a single miss (a fresh token is drawn).
VERSION_TTL_SECONDS = 7 * 24 * 3600

LOOKUPS = Counter(
    "payments_entitlements_cache_lookups_total", "Users looked up in the entitlement cache, by outcome", ["outcome"]
)
_HITS, _MISSES = LOOKUPS.labels("hit"), LOOKUPS.labels("miss")  # labels() looks the child up under a lock
UNAVAILABLE = Counter(
    "payments_entitlements_cache_unavailable_total",
    "Entitlement cache operations that failed or were skipped; reads were answered from the database",
    ["operation", "reason"],
)


class Loader(Protocol):
    def __call__(self, *, user_ids: Collection[uuid.UUID], now: datetime) -> dict[uuid.UUID, Entitlements]: ...


def version_key(user_id: uuid.UUID | str) -> str:
    return f"{KEY_PREFIX}:ver:{user_id}"


def entry_key(user_id: uuid.UUID | str, version: int | str) -> str:
    return f"{KEY_PREFIX}:val:{user_id}:{version}"


def _new_version() -> int:
    """A random positive integer: Django's Redis serializer stores an int as its digits, unpickled, so
    the read script can build the entry key from it inside Redis."""
    return secrets.randbits(62) + 1


# --- Entry format: one short text, so the bulk check's script can read it inside Redis ---------------
# "<valid_until>|;<key>:<source>:<expires_at>;..." with times as integer microseconds since the epoch
# ("" for none). Feature keys are slugs and sources are words: no separator can occur inside them, nor
# anything JSON escapes, so Redis holds it as a JSON string (quoted), like every other cache value.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
Entry = str


def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // _MICROSECOND


def _moment(micros: str) -> datetime | None:
    return None if not micros else _EPOCH + int(micros) * _MICROSECOND


def _text(micros: int | None) -> str:
    return "" if micros is None else str(micros)


def encode(entitlements: Entitlements) -> Entry:
    features = "".join(f";{f.key}:{f.source.value}:{_text(_micros(f.expires_at))}" for f in entitlements.features)
    return f"{_text(_micros(entitlements.valid_until))}|{features}"


_SOURCES = {source.value: source for source in Source}  # a dict lookup: Source(value) is slower


def decode(user_id: uuid.UUID, entry: Entry | bytes) -> Entitlements:
    text = entry.decode() if isinstance(entry, bytes) else entry
    if len(text) > 1 and text[0] == text[-1] == '"':  # as Redis holds it: a JSON string
        text = text[1:-1]
    valid_until, features = text.split("|")
    granted = []
    for feature in features.split(";")[1:]:
        key, source, expires = feature.split(":")
        granted.append(GrantedFeature(key=key, source=_SOURCES[source], expires_at=_moment(expires)))
    return Entitlements(user_id=user_id, features=tuple(granted), valid_until=_moment(valid_until))


def entitled_in(entry: bytes, wanted: bytes, now: int) -> bool | None:
    """Whether the entry, as Redis holds it, grants `wanted` (b";<key>:") at `now` (epoch microseconds),
    found in its text without decoding it (the bulk check: a thousand entries a call); None when it
    has ended or is not an entry of this format (a miss)."""
    bar = entry.find(b"|")
    if bar < 0 or entry[:1] != b'"':
        return None
    valid_until = entry[1:bar]
    if valid_until and (not valid_until.isdigit() or now >= int(valid_until)):
        return None
    return entry.find(wanted, bar) >= 0


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

    def read(self, user_ids: list[uuid.UUID]) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, Any], set[uuid.UUID]]:
        """Each user's version and entry under it, a fresh version SET for users without one, in one
        round trip with Redis (`_READ_LUA`, atomic), which also counts a rate limit's hit when given
        one (`counter.count` is set). Returns (versions, entries found, users whose version this call
        set)."""
        if isinstance(self.backend, RedisCache):
            make_key = self.backend.make_key
            prefixes = _prefixes(self.backend)
            local = tracked_reads(self.backend, prefixes, settings.ENTITLEMENTS_LOCAL_CACHE_KEYS)
            (versions, entries), generation = local.lookup(lambda get: _remembered(get, make_key, user_ids))
            if len(entries) == len(user_ids):
                return versions, entries, set()
            token = _new_version()  # drawn only for a round trip: os.urandom is a system call per check
            client = self.backend._cache.get_client(write=True)
            reply = _script(client, _READ_LUA)(
                keys=[], args=[token, VERSION_TTL_SECONDS, *prefixes, *map(str, user_ids)], client=client
            )
            versions, entries, fresh = {}, {}, set()
            for n, user_id in enumerate(user_ids):
                version, entry = reply[2 * n], reply[2 * n + 1]
                if version is None:
                    versions[user_id] = token
                    fresh.add(user_id)
                    continue
                if not version.isdigit():  # not a version we wrote (planted?): a miss, not cached
                    continue
                versions[user_id] = int(version)
                if entry is not None:
                    entries[user_id] = entry
            local.remember(_to_remember(make_key, versions, entries, fresh), generation)
            return versions, entries, fresh
        token = _new_version()
        found = self.backend.get_many([version_key(user_id) for user_id in user_ids])
        versions = {u: found[version_key(u)] for u in user_ids if isinstance(found.get(version_key(u)), int)}
        unversioned = {version_key(u): u for u in user_ids if u not in versions}
        added = self.add_many(dict.fromkeys(unversioned, token), VERSION_TTL_SECONDS)
        fresh = {unversioned[key] for key in added}
        versions.update(dict.fromkeys(fresh, token))
        stored = self.backend.get_many([entry_key(u, versions[u]) for u in versions if u not in fresh])
        entries = {u: stored[entry_key(u, versions[u])] for u in versions if entry_key(u, versions[u]) in stored}
        return versions, entries, fresh

    def check(self, user_ids: list[str], feature: str, now: datetime) -> tuple[dict[str, bool], dict[str, int]]:
        """Whether each cached user (a canonical UUID string) has `feature`, decided from the entry's text
        (`entitled_in`) without decoding it; for the others, the version under which they may be cached.
        With Redis, users this process remembers (TrackedReads) cost nothing, the rest one read script."""
        if not isinstance(self.backend, RedisCache):
            read_versions, entries, _ = self.read([uuid.UUID(user_id) for user_id in user_ids])
            answers = {}
            for user_id, entry in entries.items():
                with contextlib.suppress(TypeError, ValueError, KeyError):
                    entitlements = decode(user_id, entry)
                    if entitlements.valid_until is None or now < entitlements.valid_until:
                        answers[str(user_id)] = entitlements.has(feature)
            return answers, {str(u): v for u, v in read_versions.items() if str(u) not in answers}
        prefixes = _prefixes(self.backend)
        ver, val = (prefix.encode() for prefix in prefixes)
        wanted, micros = f";{feature}:".encode(), (now - _EPOCH) // _MICROSECOND
        # The ids as bytes in one pass (canonical UUIDs hold no comma).
        keys = dict(zip(user_ids, ",".join(user_ids).encode().split(b","), strict=True))
        local = tracked_reads(self.backend, prefixes, settings.ENTITLEMENTS_LOCAL_CACHE_KEYS)

        def remembered(get: Callable[[bytes], bytes | None]) -> tuple[dict[str, bool], list[str]]:
            # As the script reads them: each version, then the entry under it (b"": no version, no entry).
            # Whole lists through map and one answer per distinct entry: a thousand users a call.
            versions = list(map(get, [ver + key for key in keys.values()]))
            pairs = zip(keys.values(), versions, strict=True)
            entries = list(map(get, [val + key + b":" + version if version else b"" for key, version in pairs]))
            answers = {entry: entitled_in(entry, wanted, micros) for entry in set(entries) if entry is not None}
            found, rest = {}, []
            for text, entry in zip(keys, entries, strict=True):
                answer = answers.get(entry) if entry is not None else None
                if answer is None:
                    rest.append(text)
                else:
                    found[text] = answer
            return found, rest

        (found, rest), generation = local.lookup(remembered)
        versions: dict[str, int] = {}
        if not rest:
            return found, versions
        token = _new_version()
        client = self.backend._cache.get_client(write=True)
        reply = _script(client, _READ_LUA)(keys=[], args=[token, VERSION_TTL_SECONDS, *prefixes, *rest], client=client)
        decided = {entry: entitled_in(entry, wanted, micros) for entry in set(reply[1::2]) if entry is not None}
        remember = {}
        for text, version, entry in zip(rest, reply[0::2], reply[1::2], strict=True):
            if version is None:
                versions[text] = token  # set by the script: not remembered (its own push takes it back)
                continue
            if not version.isdigit():  # not a version we wrote (planted?): a miss, not cached
                continue
            remember[ver + keys[text]] = version
            answer = None
            if entry is not None:
                remember[val + keys[text] + b":" + version] = entry
                answer = decided[entry]
            if answer is None:
                versions[text] = int(version)
            else:
                found[text] = answer
        local.remember(remember, generation)
        return found, versions

    def set_each(self, values: Mapping[str, tuple[Entry, int]]) -> None:
        """SET each entry with its own timeout (seconds, > 0); with Redis, as the text itself (unpickled:
        the bulk check reads it, `entitled_in`)."""
        if not values:
            return
        if isinstance(self.backend, RedisCache):
            pipeline = self.backend._cache.get_client(write=True).pipeline(transaction=False)
            for key, (value, timeout) in values.items():
                pipeline.set(self.backend.make_key(key), f'"{value}"'.encode(), ex=timeout)  # a JSON string
            pipeline.execute()
            return
        for key, (value, timeout) in values.items():
            self.backend.set(key, value, timeout)

    def set_many(self, values: Mapping[str, Any], timeout: int) -> None:
        self.backend.set_many(dict(values), timeout)


def _prefixes(backend: RedisCache) -> tuple[str, str]:
    """The version and entry keys' prefixes as Redis holds them: what TrackedReads tracks."""
    return backend.make_key(version_key("")), backend.make_key(entry_key("", "")).removesuffix(":")


def _remembered(
    get: Callable[[bytes], bytes | None], make_key: Callable[[str], str], user_ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, Any]]:
    """The versions and entries this process remembers (TrackedReads), read in the script's order:
    the version first, then the entry under it."""
    versions: dict[uuid.UUID, int] = {}
    entries: dict[uuid.UUID, Any] = {}
    for user_id in user_ids:
        version = get(make_key(version_key(user_id)).encode())
        if version is None:
            break
        versions[user_id] = int(version)
        entry = get(make_key(entry_key(user_id, versions[user_id])).encode())
        if entry is None:
            break
        entries[user_id] = entry
    return versions, entries


def _to_remember(
    make_key: Callable[[str], str],
    versions: dict[uuid.UUID, int],
    entries: dict[uuid.UUID, Any],
    fresh: set[uuid.UUID],
) -> dict[bytes, bytes]:
    """What the read script found, as Redis holds it (a version set by the script itself is not
    remembered: its own push would take it back)."""
    found = {}
    for user_id, version in versions.items():
        if user_id not in fresh:
            found[make_key(version_key(user_id)).encode()] = str(version).encode()
            if user_id in entries:
                found[make_key(entry_key(user_id, version)).encode()] = entries[user_id]
    return found


# ARGV: a fresh version, its TTL, the version and entry key prefixes, then the user ids. For each user
# in turn, returns its version and the entry under it (nil entry: none; nil version: ARGV[1] was set).
# It builds its keys itself (none in KEYS): fine on one Redis (ours), not on Redis Cluster.
_READ_LUA = """
local out = {}
local token, ttl, ver, val = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV do
  local user = ARGV[i]
  local key = ver .. user
  local version = redis.call('GET', key)
  if version then
    out[2 * i - 9] = version
    out[2 * i - 8] = redis.call('GET', val .. user .. ':' .. version)
  else
    redis.call('SET', key, token, 'EX', ttl)
    out[2 * i - 9] = false
    out[2 * i - 8] = false
  end
end
return out
"""
_scripts: dict[tuple[int, str], Any] = {}


def _script(client: Any, text: str) -> Any:
    """A registered script (EVALSHA; loaded by redis-py on its first NOSCRIPT)."""
    script = _scripts.get((id(client), text))
    if script is None:
        script = _scripts.setdefault((id(client), text), client.register_script(text))
    return script


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
) -> tuple[dict[uuid.UUID, Entitlements], dict[uuid.UUID, int]]:
    """The cached entitlements found, and the version under which each missing user may be cached."""
    versions, entries, _ = store.read(user_ids)
    found: dict[uuid.UUID, Entitlements] = {}
    for user_id, entry in entries.items():
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
    _HITS.inc(len(found))
    if missing:
        found.update(_load_and_cache(store, missing, versions, load, now))
    return found


def entitled_many(*, user_ids: Collection[str], feature: str, load: Loader) -> dict[str, bool]:
    """Whether each user (a canonical UUID string: lower case, hyphens) has `feature`: decided inside
    Redis for the cached users (no entry crosses the wire, no UUID object is made), the rest from `load`
    in one go (then cached). Same guarantees as entitlements_get_many."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    now = timezone.now()
    store = _store()
    try:
        answers, versions = _guarded("read", lambda: store.check(ids, feature, now))
    except Exception:
        loaded = load(user_ids=[uuid.UUID(user_id) for user_id in ids], now=now)
        return {str(user_id): found.has(feature) for user_id, found in loaded.items()}
    _HITS.inc(len(answers))
    if len(answers) < len(ids):
        missing = {uuid.UUID(user_id): user_id for user_id in ids if user_id not in answers}
        known = {user: versions[text] for user, text in missing.items() if text in versions}
        loaded = _load_and_cache(store, list(missing), known, load, now)
        answers.update({text: loaded[user].has(feature) for user, text in missing.items()})
    return answers


def entitled_remembered(*, user_id: str, feature: str) -> bool | None:
    """Whether the user (a canonical UUID string) has `feature`, from what this process remembers alone
    (TrackedReads: no round trip, no query), decided from the entry's text as the bulk check decides it;
    None when it does not remember the user's version and the entry under it, the entry has ended, the
    cache is not Redis or the breaker is open: the caller asks entitlements_get_many, which reads Redis."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache) or _breaker.is_open():
        return None
    prefixes = _prefixes(backend)
    ver, val, key = prefixes[0].encode(), prefixes[1].encode(), user_id.encode()

    def remembered(get: Callable[[bytes], bytes | None]) -> bytes | None:
        version = get(ver + key)  # as the read script: the version first, then the entry under it
        return None if version is None else get(val + key + b":" + version)

    local = tracked_reads(backend, prefixes, settings.ENTITLEMENTS_LOCAL_CACHE_KEYS)
    entry, _ = local.lookup(remembered)
    if entry is None:
        return None
    answer = entitled_in(entry, f";{feature}:".encode(), (timezone.now() - _EPOCH) // _MICROSECOND)
    if answer is not None:
        _HITS.inc()
    return answer


def _load_and_cache(
    store: _Store, missing: list[uuid.UUID], versions: Mapping[uuid.UUID, int], load: Loader, now: datetime
) -> dict[uuid.UUID, Entitlements]:
    """The missing users from `load`, each then cached under the version read before the load."""
    _MISSES.inc(len(missing))
    loaded = load(user_ids=missing, now=now)
    entries = {}
    for user_id in missing:
        timeout = entry_timeout(loaded[user_id], now=now)
        if user_id in versions and timeout > 0:
            entries[entry_key(user_id, versions[user_id])] = (encode(loaded[user_id]), timeout)
    if entries:
        # A failed write is counted and logged by _guarded; the answer stands without the cache.
        with contextlib.suppress(Exception):
            _guarded("write", lambda: store.set_each(entries))
    return loaded


# --- Invalidation -------------------------------------------------------------------------------


def versions_bump(*, user_ids: Collection[uuid.UUID]) -> None:
    """Give each user a new version (one round trip); raises if the cache is unreachable.

    Never skipped by the breaker: a bump that is not even tried could leave a stale entry readable
    once Redis answers again.
    """
    if user_ids:
        _store().set_many({version_key(user_id): _new_version() for user_id in user_ids}, VERSION_TTL_SECONDS)
