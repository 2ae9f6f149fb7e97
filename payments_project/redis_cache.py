"""Django's Redis cache backend, with one redis-py client per connection pool instead of one per call.

Django's RedisCacheClient.get_client builds a new `redis.Redis` for every cache operation; redis-py's
constructor registers its ~170 response callbacks each time, which cost more CPU than the round trip
itself on the entitlement check. A `redis.Redis` is thread-safe (each command checks a connection out
of the pool), so one per pool is shared by every thread of the process. Everything else — pools,
serializer, options — is Django's.
"""

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.exceptions import ConnectionError, RedisError

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ReusingRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}  # id(pool) -> its client

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients.setdefault(id(pool), self._client(connection_pool=pool))  # type: ignore[attr-defined]
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ReusingRedisCacheClient


class TrackedReads:
    """Values of Redis keys under some prefixes, kept in this process and forgotten as soon as Redis says
    they changed: a hit costs no round trip (issue 18, the entitlement check).

    redis-py's own client-side cache (`cache_config`) would do this, but it refuses servers older than
    Redis 7.4 and ours is 7.0; so this is the same mechanism, on one dedicated RESP3 connection asking
    for broadcast tracking of the prefixes (CLIENT TRACKING ON BCAST PREFIX ...): Redis pushes an
    invalidation for every change to a key under them (write, expiry, eviction; FLUSHDB: all).

    Never stale beyond the push's delivery: `lookup` reads every pending push (a non-blocking read of
    that socket) before it answers, under the lock `remember` takes. Redis writes the push in the same
    event-loop pass as the changing command's reply, so once a bump has been acknowledged, its push is
    in our socket (one network delay later across hosts), and the next lookup applies it. A value read
    from Redis is remembered only if no push was applied since before that read (`generation`), and only
    while the tracking connection is up. If the connection fails, is closed, or stops answering its PING
    within HEALTH_SECONDS (pushes may have been lost), everything is forgotten and lookups miss until a
    new connection tracks again (tried at most once per RECONNECT_SECONDS). When no PONG came in the
    last 2 x HEALTH_SECONDS (an idle process: a silently dead connection would not say so), the lookup
    waits for one before it answers.

    A flush of ANY database on the server pushes "everything changed" to every tracking connection, and
    the push does not say which database: another service's (or a test suite's) FLUSHDB on a shared
    server emptied this memory each time, and the checks went back to Redis (issue 18's run-to-run
    swing). So the connection keeps a sentinel key of its own in our database (`sentinel`, a random
    token, outside the tracked prefixes); after such a push it reads the sentinel back on the same
    connection, after the push: still there, our database was not flushed (a FLUSHDB empties a database
    at once) and only what the push's generation bump drops is lost; gone or unreadable, everything is
    forgotten and a new sentinel written.
    """

    HEALTH_SECONDS = 1.0
    RECONNECT_SECONDS = 1.0
    SENTINEL_SECONDS = 24 * 3600  # one key per process, left behind when it stops: expires a day later

    def __init__(self, pool: Any, prefixes: list[str], max_keys: int, sentinel: str) -> None:
        self._pool = pool
        self._prefixes = prefixes
        self._sentinel = sentinel
        self._token = b""  # the sentinel's value while the connection is up
        self._flushed = False  # a flush push arrived: is the sentinel still there?
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._values: dict[bytes, bytes] = {}
        self._generation = 0  # +1 on every applied push and every flush
        self._connection: Any = None
        self._pid = 0
        self._retry_at = 0.0
        self._pong_at = 0.0  # when the connection last proved alive (connected, or a PONG read)
        self._pinged = 0.0  # when the PING in flight was sent (0: none)

    def lookup(self, keys: Callable[[Callable[[bytes], bytes | None]], T]) -> tuple[T, int]:
        """Call `keys(get)` with the pending pushes applied (get: a remembered value, or None), and the
        generation to hand to `remember` for values then read from Redis."""
        with self._lock:
            self._sync()
            return keys(self._values.get), self._generation

    def remember(self, values: dict[bytes, bytes], generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._connection is None:
                return
            if len(self._values) + len(values) > self._max_keys:  # bounded memory: start afresh
                self._values = {}
            self._values.update(values)

    def _sync(self) -> None:
        now = time.monotonic()
        if self._pid != os.getpid():  # a forked child must not read its parent's socket
            self._connection, self._pid = None, os.getpid()
            self._forget()
        if self._connection is None:
            if now < self._retry_at:
                return
            self._retry_at = now + self.RECONNECT_SECONDS
            self._connect()
            return
        try:
            while self._connection.can_read(timeout=0):
                if self._connection.read_response(push_request=True) == b"PONG":
                    self._pinged, self._pong_at = 0.0, now
            if self._flushed:
                self._check_sentinel()
            if self._pinged and now - self._pinged > self.HEALTH_SECONDS:
                raise ConnectionError("no PONG in time")
            if now - self._pong_at > 2 * self.HEALTH_SECONDS:
                # Nothing proved the connection alive lately (an idle process): pushes may have been lost
                # without the socket saying so. A PONG read now proves they were not: Redis wrote every
                # push due before it ahead of it, on this connection (forgetting instead sent every
                # check of the next seconds back to Redis, one user at a time).
                if not self._pinged:
                    self._connection.send_command("PING")
                self._connection.read_response()  # pushes on the way are applied; then the PONG
                self._pinged, self._pong_at = 0.0, time.monotonic()
            elif not self._pinged and now - self._pong_at >= self.HEALTH_SECONDS:
                self._connection.send_command("PING")
                self._pinged = now
        except (RedisError, OSError) as exc:
            log.warning("redis_tracking_lost", error=repr(exc))
            self._disconnect()

    def _connect(self) -> None:
        connection = self._pool.connection_class(**{**self._pool.connection_kwargs, "protocol": 3})
        try:
            connection.connect()
            connection._parser.set_invalidation_push_handler(self._invalidate)  # as redis-py's own cache
            prefixes = [word for prefix in self._prefixes for word in ("PREFIX", prefix)]
            connection.send_command("CLIENT", "TRACKING", "ON", "BCAST", *prefixes)
            connection.read_response()
            self._connection, self._pinged, self._flushed = connection, 0.0, False
            self._set_sentinel()
        except (RedisError, OSError) as exc:
            log.warning("redis_tracking_unavailable", error=repr(exc))
            self._connection = None
            connection.disconnect()
            return
        self._pong_at = time.monotonic()
        self._forget()

    def _set_sentinel(self) -> None:
        self._token = f'"{uuid.uuid4().hex}"'.encode()  # a JSON string: Redis holds nothing else of ours
        self._connection.send_command("SET", self._sentinel, self._token, "EX", self.SENTINEL_SECONDS)
        self._connection.read_response()

    def _check_sentinel(self) -> None:
        """After a flush push: forget everything only if it was our database that was flushed."""
        self._flushed = False
        self._connection.send_command("GET", self._sentinel)
        if self._pinged:  # replies come in order: the PING's first
            self._connection.read_response()
            self._pinged, self._pong_at = 0.0, time.monotonic()
        if self._connection.read_response() != self._token:
            self._forget()
            self._set_sentinel()

    def _invalidate(self, push: list[Any]) -> None:
        # [b"invalidate", [keys]] or [b"invalidate", None]: a database was flushed, ours or another
        # (_check_sentinel tells, before the next lookup answers).
        self._generation += 1
        if push[1] is None:
            self._flushed = True
            return
        for key in push[1]:
            self._values.pop(key, None)

    def _forget(self) -> None:
        self._generation += 1
        self._values = {}

    def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.disconnect()
        self._connection = None
        self._forget()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(RedisError, OSError):
                    self._connection.send_command("DEL", self._sentinel)
                    self._connection.read_response()
                self._disconnect()


_tracked: dict[tuple[Any, ...], TrackedReads] = {}
_tracked_lock = threading.Lock()


def tracked_reads(cache: DjangoRedisCache, prefixes: tuple[str, ...], max_keys: int) -> TrackedReads:
    """The process's TrackedReads of these prefixes on this cache's Redis (the cache objects are
    per thread; what they remember is shared by the process's threads)."""
    key = (tuple(cache._servers), prefixes)  # type: ignore[attr-defined]  # set by Django's __init__
    found = _tracked.get(key)
    if found is None:
        with _tracked_lock:
            pool = cache._cache._get_connection_pool(False)  # type: ignore[attr-defined]
            sentinel = cache.make_key(f"tracked-reads:{uuid.uuid4().hex}")
            found = _tracked.setdefault(key, TrackedReads(pool, list(prefixes), max_keys, sentinel))
    return found


@receiver(setting_changed)
def _forget_tracked(*, setting: str, **kwargs: Any) -> None:
    # Another cache (tests pointing it elsewhere and back) starts with nothing remembered.
    if setting == "CACHES":
        with _tracked_lock:
            for tracked in _tracked.values():
                tracked.close()
            _tracked.clear()
