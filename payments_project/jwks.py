"""The identity provider's key set (JWT_JWKS_URL), fetched for ClientTokenBackend.

PyJWKClient fetched under one process-wide lock, so while the key endpoint hung every authenticated
request queued behind the fetch; a failed fetch did not start its cooldown, so each request tried again;
and once its cache expired it had nothing to verify with. Here, per process:

- a set younger than JWT_JWKS_CACHE_SECONDS is used as is;
- an older one is refreshed by ONE request (single-flight: a non-blocking lock; the fetch has a total
  deadline of JWT_JWKS_TIMEOUT_SECONDS). Every other request meanwhile goes on with the last good set;
- every fetch attempt, failed or not, starts JWT_JWKS_REFRESH_COOLDOWN_SECONDS before the next one (an
  unknown `kid` triggers a refetch only after it too);
- while the endpoint fails, the last good set is served up to JWT_JWKS_MAX_STALE_SECONDS old. Past that,
  or before any set was ever fetched, a token cannot be verified: KeysUnavailable (503 with Retry-After,
  not 401: the token may well be good, the client should retry, not sign in again). Requests that find
  another fetching and have no usable set fail the same way at once instead of waiting.
"""

import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import structlog

from payments_project.errors import DependencyUnavailable
from payments_project.json_body import json_loads

log = structlog.get_logger(__name__)

MAX_JWKS_BYTES = 512 * 1024  # a key set is a few KiB


class KeysUnavailable(DependencyUnavailable):
    code = "identity_keys_unavailable"
    title = "The identity provider's keys are unavailable"


class UnknownKey(LookupError):
    """The set (fresh, or served stale) has no key with this kid."""


@dataclass(frozen=True)
class JwksPolicy:
    url: str
    cache_seconds: float
    max_stale_seconds: float
    cooldown_seconds: float
    timeout_seconds: float


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The key set is read from JWT_JWKS_URL itself: a redirect (to http://, to another host) is a failure."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


class JwksKeys:
    """The key set of one URL, for one process (one per ClientTokenBackend)."""

    def __init__(self, policy: JwksPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last good fetch
        self._attempted_at: float | None = None  # the last fetch attempt, good or not
        self._last_failed = False
        self._fetching = threading.Lock()  # held by the one request that fetches; never waited for

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """The key named `kid`; UnknownKey if the set has none; KeysUnavailable without a usable set."""
        keys, age = self._keys, self._age()
        if age is not None and age < self.policy.cache_seconds and kid in keys:
            return keys[kid]  # the hot path: no lock
        if self._may_fetch() and self._fetching.acquire(blocking=False):
            try:
                if self._needs_fetch(kid) and self._may_fetch():  # unless another one just fetched
                    self._refresh()
            finally:
                self._fetching.release()
        keys, age = self._keys, self._age()
        if age is None or age >= max(self.policy.max_stale_seconds, self.policy.cache_seconds):
            log.warning("jwks_unavailable", url=self.policy.url, age_seconds=age)
            raise KeysUnavailable(
                "The identity provider's keys are unavailable; try again shortly", retry_after=self._retry_after()
            )
        if kid not in keys:
            raise UnknownKey(kid)
        return keys[kid]

    def _needs_fetch(self, kid: str) -> bool:
        age = self._age()
        return age is None or age >= self.policy.cache_seconds or kid not in self._keys

    def _retry_after(self) -> int:
        if self._attempted_at is None:
            return 1
        return max(1, int(self.policy.cooldown_seconds - (self._clock() - self._attempted_at) + 0.999))

    def _age(self) -> float | None:
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    def _may_fetch(self) -> bool:
        """A set due for its refresh may be fetched unless the last attempt failed within the cooldown; a
        fresh set (refetched for an unknown kid) not within the cooldown of the last attempt at all."""
        if self._attempted_at is None:
            return True
        in_cooldown = self._clock() - self._attempted_at < self.policy.cooldown_seconds
        age = self._age()
        due = age is None or age >= self.policy.cache_seconds
        return not in_cooldown or (due and not self._last_failed)

    def _refresh(self) -> None:
        started = self._clock()
        self._attempted_at = started  # the cooldown starts now, whatever happens
        try:
            keys = self._download()
        except Exception as exc:  # any failure: keep serving the last good set (bounded by max staleness)
            age = self._age()
            log.warning("jwks_fetch_failed", url=self.policy.url, error=repr(exc), stale_age_seconds=age)
            self._last_failed = True
            return
        self._keys, self._fetched_at, self._last_failed = keys, started, False
        log.info("jwks_fetched", url=self.policy.url, keys=len(keys), seconds=round(self._clock() - started, 3))

    def _download(self) -> dict[str, jwt.PyJWK]:
        """GET the set within one total deadline (a server dripping bytes cannot hold us longer)."""
        deadline = self._clock() + self.policy.timeout_seconds
        headers = {"User-Agent": "jia-payments", "Accept": "application/json"}
        request = urllib.request.Request(self.policy.url, headers=headers)  # noqa: S310 - the operator's https URL
        body = b""
        with _opener.open(request, timeout=self.policy.timeout_seconds) as response:
            while chunk := response.read(16 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("the key set is larger than 512 KiB")
                if self._clock() > deadline:
                    raise TimeoutError("the key set took longer than JWT_JWKS_TIMEOUT_SECONDS")
        jwk_set = jwt.PyJWKSet.from_dict(json_loads(body))
        return {key.key_id: key for key in jwk_set.keys if key.key_id and key.public_key_use in ("sig", None)}
