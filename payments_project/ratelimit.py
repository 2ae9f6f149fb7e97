"""Rate limits: fixed-window counters on the shared cache (Redis in production), one round trip a check.

- Rates live in one settings dict, `RATE_LIMITS` (group -> "count/period"), each overridable by
  `RATE_LIMIT_<GROUP>` in the environment (settings/base.py).
- The key is the user id when the caller is authenticated, else the client IP (`client_ip`: REMOTE_ADDR,
  or X-Forwarded-For read only through `TRUSTED_PROXY_COUNT` trusted proxies, so it cannot be spoofed).
  The `webhook` group is always keyed by IP.
- Apply a group with `@rate_limited("checkout")` (plain Django views and DRF view methods) or, for DRF
  class views, set `rate_limit_group = "checkout"`: the default DRF throttle (RateLimitThrottle) limits
  every API view — `api_read` for safe methods, `api_write` otherwise, unless the view names its group.
- DRF authenticates before it throttles, so a refused credential never reaches the throttle: our DRF
  exception handler counts every 401 against the caller's IP in the view's group instead.
- Over the limit: 429 problem+json with Retry-After (errors.RateLimited).
"""

import functools
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal, TypeVar, cast

import structlog
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django_ratelimit.exceptions import Ratelimited
from redis.exceptions import RedisError
from rest_framework import exceptions as drf_exceptions
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from payments_project import errors
from payments_project.errors import RATELIMITED_RETRY_AFTER_SECONDS, RateLimited, application_error_response

log = structlog.get_logger(__name__)

KeyKind = Literal["auto", "ip", "user_or_ip"]
# Groups keyed by IP whatever the caller: nobody is "authenticated" on them in our sense.
IP_KEYED_GROUPS = frozenset({"webhook", "webhook_rejected"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

F = TypeVar("F", bound=Callable[..., Any])


def _parse_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest | Request) -> str:
    """The caller's IP address, normalised; "" when there is none.

    With TRUSTED_PROXY_COUNT = N > 0, each of our N proxies appends the address it received the
    request from to X-Forwarded-For, so the client is the N-th entry from the right; whatever the
    client wrote itself sits further left and is ignored. A header with fewer than N entries did not
    come through our proxies, so REMOTE_ADDR is used.
    """
    meta = request.META
    remote = _parse_ip(meta.get("REMOTE_ADDR", "")) or ""
    trusted = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if trusted <= 0:
        return remote
    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    if len(hops) < trusted:
        return remote
    return _parse_ip(hops[-trusted]) or remote


def _masked_ip(ip: str) -> str:
    """IPv6 clients are keyed by their /64 (one subscriber's allocation), IPv4 by the address."""
    if ":" in ip:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return ip


def rate_limit_key(request: HttpRequest | Request, *, by: KeyKind = "user_or_ip") -> str:
    if by == "user_or_ip":
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            return f"user:{user.pk}"
    return f"ip:{_masked_ip(client_ip(request)) or 'unknown'}"


def rate_for(group: str) -> str:
    try:
        return str(settings.RATE_LIMITS[group])
    except KeyError:
        raise ImproperlyConfigured(f"no rate limit named {group!r} in RATE_LIMITS") from None


def _key_kind(group: str, by: KeyKind) -> KeyKind:
    if by == "auto":
        return "ip" if group in IP_KEYED_GROUPS else "user_or_ip"
    return by


_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@functools.cache  # a handful of distinct rates; the hot entitlement check parses one per request
def _split_rate(rate: str) -> tuple[int, int]:
    """ "100/5m" -> (100, 300): settings/parsing.py has checked the shape."""
    count, period = rate.split("/")
    return int(count), int(period[:-1] or 1) * _PERIOD_SECONDS[period[-1]]


@dataclass(frozen=True)
class Window:
    """One caller's counter in `group` for the current fixed window (the window is in the key's name,
    so refreshing its expiry on each hit never stretches a window)."""

    group: str
    key: str  # user:<id> or ip:<address>
    limit: int
    name: str  # the counter's cache key (before the cache's own prefix)
    ttl: int  # seconds the counter is kept
    left: int  # seconds until the window ends: the Retry-After


def window_for(request: HttpRequest | Request, group: str, *, by: KeyKind = "auto") -> Window:
    key = rate_limit_key(request, by=_key_kind(group, by))
    limit, period = _split_rate(rate_for(group))
    now = time.time()
    window = int(now // period)
    left = max(1, int((window + 1) * period - now))
    return Window(group, key, limit, f"rl:{group}:{period}:{key}:{window}", period + 1, left)


def _hit(window: Window, hits: int = 1) -> int:
    """Count `hits` hits; the hits so far in the window, every process's. With Redis: INCRBY and EXPIRE
    in one pipeline, one round trip. Other caches: add, then incr."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        cache_key = cache.make_key(window.name)
        pipeline = cache._cache.get_client(write=True).pipeline(transaction=False)
        pipeline.incrby(cache_key, hits)
        pipeline.expire(cache_key, window.ttl)
        count, _ = pipeline.execute()
        return int(count)
    cache.add(window.name, 0, window.ttl)
    return int(cache.incr(window.name, hits))


class _BatchedHits:
    """A process's hits, reported to the shared counter in batches: most checks cost no round trip.

    A caller's hits are sent (INCRBY) once `batch` of them have gathered here, `batch` being 1/50 of the
    limit (1 for limits under 100: every hit reported, as `_hit` does). The answer is the shared count
    last seen plus the hits gathered since, so each process lets a caller past the limit by at most
    `batch - 1` hits a window: with N processes, at most limit * (1 + N/50). An attacker is still limited
    (and, once over, refused here without a round trip). Entries of ended windows are dropped every
    second, and all of them past MAX_KEYS (their unreported hits forgiven): bounded memory.
    """

    SHARE = 50
    MAX_KEYS = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # name -> [unreported, shared count seen, window's end]
        self._sweep_at = 0.0

    def hit(self, window: Window) -> int:
        batch = max(1, window.limit // self.SHARE)
        now = time.time()
        with self._lock:
            if now >= self._sweep_at or len(self._windows) >= self.MAX_KEYS:
                live = {k: v for k, v in self._windows.items() if v[2] > now}
                self._windows, self._sweep_at = live if len(live) < self.MAX_KEYS else {}, now + 1
            counts = self._windows.setdefault(window.name, [0, 0, now + window.left])
            counts[0] += 1
            if counts[0] < batch:
                return int(counts[0] + counts[1])
            unreported, counts[0] = int(counts[0]), 0
        shared = _hit(window, unreported)  # raises when the cache is down: the caller fails open
        with self._lock:
            counts[1] = max(counts[1], shared)
            return int(counts[0] + counts[1])

    def clear(self) -> None:
        with self._lock:
            self._windows = {}


_batched = _BatchedHits()


def check_batched(request: HttpRequest | Request, group: str, *, by: KeyKind = "auto") -> None:
    """check_rate_limit, with the hits reported in batches (_BatchedHits): for the hot paths (the entitlement
    check, accepted webhook deliveries)."""
    window = window_for(request, group, by=by)
    try:
        count: int | None = _batched.hit(window)
    except (RedisError, OSError, ValueError) as exc:  # the cache is down: fail open (availability first), loudly
        log.warning("rate_limit_cache_unavailable", group=group, error=repr(exc))
        return
    enforce(window, count)


@receiver(setting_changed)
def _forget_batched(*, setting: str, **kwargs: Any) -> None:
    # Other limits or another cache (tests) start from zero.
    if setting in ("RATE_LIMITS", "CACHES"):
        _batched.clear()


def enforce(window: Window, count: int | None) -> None:
    """Raise RateLimited (429, Retry-After) when `count` hits are over the window's limit; None (the
    counter could not be reached) fails open, loudly."""
    if count is None:
        log.warning("rate_limit_cache_unavailable", group=window.group)
        return
    if count <= window.limit:
        return
    log.info("rate_limited", group=window.group, key_kind=window.key.split(":", 1)[0], retry_after=window.left)
    raise RateLimited(f"Rate limit '{window.group}' exceeded; retry in {window.left} s", retry_after=window.left)


def check_rate_limit(request: HttpRequest | Request, group: str, *, by: KeyKind = "auto") -> None:
    """Count this request against `group`; raise RateLimited (429, Retry-After) once over the rate."""
    window = window_for(request, group, by=by)
    try:
        count: int | None = _hit(window)
    except (RedisError, OSError, ValueError) as exc:  # the cache is down: fail open (availability first), loudly
        log.warning("rate_limit_cache_unavailable", group=group, error=repr(exc))
        return
    enforce(window, count)


def rate_limited(group: str, *, by: KeyKind = "auto") -> Callable[[F], F]:
    """Limit a view by `group` — a plain Django function view or a DRF view method (self, request)."""
    rate_for(group)  # an unknown group fails at import time, not on the first request

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            request = next(arg for arg in args[:2] if isinstance(arg, HttpRequest | Request))
            check_rate_limit(request, group, by=by)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorator


def _method_group(request: HttpRequest | Request) -> str:
    return "api_read" if request.method in SAFE_METHODS else "api_write"


class RateLimitThrottle(BaseThrottle):
    """The default DRF throttle: every API view is limited, by its `rate_limit_group` or by method.

    A view opts out only by setting `rate_limit_group = None` explicitly (e.g. because it applies
    `@rate_limited` itself).
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        group = getattr(view, "rate_limit_group", "")
        if group is None:
            return True
        check_rate_limit(request, group or _method_group(request))
        return True


class BatchedRateLimitThrottle(RateLimitThrottle):
    """RateLimitThrottle with the hits reported in batches (check_batched): for an API view other services
    call on every request they serve (the internal bulk entitlement check)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        check_batched(request, getattr(view, "rate_limit_group", "") or _method_group(request))
        return True


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: a 401 counts against the caller's IP, then errors.exception_handler renders.

    Throttles run after authentication, so without this a caller could try tokens (or certificates)
    forever. The 401 is charged to the view's group keyed by IP — the budget an anonymous caller from
    that address has — and once it is spent the answer is 429 instead.
    """
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        request = context["request"]
        group = getattr(context.get("view"), "rate_limit_group", "") or _method_group(request)
        try:
            check_rate_limit(request, group, by="ip")
        except RateLimited as limited:
            exc = limited
    return errors.exception_handler(exc, context)


def ratelimited_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    """RATELIMIT_VIEW: someone used django-ratelimit's own decorator; still answer 429 problem+json."""
    return application_error_response(request, RateLimited(retry_after=RATELIMITED_RETRY_AFTER_SECONDS))


__all__ = [
    "IP_KEYED_GROUPS",
    "BatchedRateLimitThrottle",
    "RateLimitThrottle",
    "Ratelimited",
    "check_rate_limit",
    "client_ip",
    "exception_handler",
    "rate_for",
    "rate_limit_key",
    "rate_limited",
    "ratelimited_view",
]
