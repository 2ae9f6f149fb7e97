"""The identity provider's key set when its endpoint fails or hangs (payments_project/jwks.py): the last
good set keeps verifying (up to JWT_JWKS_MAX_STALE_SECONDS), every attempt starts the cooldown, and only
one request per process ever waits for a fetch. Real HTTP servers on loopback, real threads."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client, override_settings

from payments_project import auth
from tests.payments_project.auth_views import CALLS
from tests.support.auth import JwksServer, public_jwk, token
from tests.support.races import race

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.payments_project.auth_views")]

ME = "/api/v1/test/me"
PROBLEM = "application/problem+json"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
USER = "0190c6a8-0000-7000-8000-00000000a11c"
BEARER = f"Bearer {token(USER, key=KEY, algorithm='RS256', headers={'kid': 'k1'})}"


@pytest.fixture(autouse=True)
def _fresh_backend() -> Iterator[None]:
    CALLS.clear()
    auth._backend = None
    yield
    auth._backend = None


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with JwksServer([public_jwk(KEY, kid="k1")]) as server:
        yield server


def jwks(server: JwksServer, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "JWT_ALGORITHM": "RS256",
        "JWT_SIGNING_KEY": "",
        "JWT_VERIFYING_KEY": "",
        "JWT_JWKS_URL": server.url,
        "JWT_JWKS_CACHE_SECONDS": 0.3,
        "JWT_JWKS_REFRESH_COOLDOWN_SECONDS": 30,
        "JWT_JWKS_MAX_STALE_SECONDS": 3600,
        "JWT_JWKS_TIMEOUT_SECONDS": 3,
    }
    return override_settings(**{**values, **overrides})


def timed_get() -> tuple[int, float]:
    started = time.perf_counter()
    response = Client().get(ME, HTTP_AUTHORIZATION=BEARER)
    return response.status_code, time.perf_counter() - started


def test_while_the_key_endpoint_fails_the_last_good_set_keeps_verifying_and_the_cooldown_starts(
    idp: JwksServer,
) -> None:
    with jwks(idp, JWT_JWKS_REFRESH_COOLDOWN_SECONDS=2):
        assert timed_get()[0] == 200
        idp.status = 500
        time.sleep(0.4)  # the set is older than the cache time now

        assert timed_get()[0] == 200  # a refresh was tried, failed; the last good set answered
        assert timed_get()[0] == 200  # within the cooldown of that failure: not tried again
        assert idp.fetches == 2

        time.sleep(2.1)
        assert timed_get()[0] == 200
        assert idp.fetches == 3  # one attempt per cooldown, failures included

        idp.status = 200
        time.sleep(2.1)
        assert timed_get()[0] == 200
        assert idp.fetches == 4


def test_past_the_maximum_staleness_tokens_get_a_503_to_retry(idp: JwksServer) -> None:
    with jwks(idp, JWT_JWKS_CACHE_SECONDS=0.2, JWT_JWKS_MAX_STALE_SECONDS=1.5, JWT_JWKS_REFRESH_COOLDOWN_SECONDS=0):
        assert timed_get()[0] == 200
        idp.status = 503
        time.sleep(0.3)
        assert timed_get()[0] == 200  # stale, within bounds
        time.sleep(1.3)

        response = Client().get(ME, HTTP_AUTHORIZATION=BEARER)

    assert response.status_code == 503
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"].endswith(":identity_keys_unavailable")
    assert int(response["Retry-After"]) >= 1
    assert CALLS["me"] == 2  # the refused request never reached the view


def test_a_failing_endpoint_is_asked_once_per_cooldown_not_once_per_request(idp: JwksServer) -> None:
    idp.status = 500
    with jwks(idp):
        statuses = [timed_get()[0] for _ in range(10)]

    assert statuses == [503] * 10
    assert idp.fetches == 1


def test_with_the_endpoint_hanging_3_s_only_one_request_waits_the_rest_use_the_last_good_set(
    idp: JwksServer,
) -> None:
    with jwks(idp, JWT_JWKS_CACHE_SECONDS=1):
        assert timed_get()[0] == 200
        time.sleep(1.1)  # stale: the next requests want a refresh
        idp.delay = 3.0

        outcomes = race(*[timed_get] * 8)

    statuses = [status for status, _ in outcomes]
    seconds = sorted(duration for _, duration in outcomes)
    print(f"\n8 concurrent requests, JWKS hanging 3 s: durations {[round(s, 3) for s in seconds]}")
    assert statuses == [200] * 8
    assert seconds[-1] >= 2.5  # the one that fetched waited for the hanging endpoint (and then timed out)
    assert seconds[-2] < 1.0  # nobody else waited
    assert idp.fetches == 2


def test_before_any_set_was_fetched_a_hanging_endpoint_holds_one_request_and_the_rest_fail_fast(
    idp: JwksServer,
) -> None:
    idp.delay = 3.0
    with jwks(idp, JWT_JWKS_TIMEOUT_SECONDS=1):
        outcomes = race(*[timed_get] * 8)

    seconds = sorted(duration for _, duration in outcomes)
    print(f"\n8 concurrent requests, cold start, JWKS hanging: durations {[round(s, 3) for s in seconds]}")
    assert [status for status, _ in outcomes] == [503] * 8
    assert 0.9 <= seconds[-1] < 2.5  # the fetcher, bounded by JWT_JWKS_TIMEOUT_SECONDS
    assert seconds[-2] < 0.9
    assert idp.fetches == 1


def test_an_unknown_kid_still_fetches_the_rotated_set_once(idp: JwksServer) -> None:
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotated = f"Bearer {token(USER, key=new_key, algorithm='RS256', headers={'kid': 'k2'})}"
    with jwks(idp, JWT_JWKS_CACHE_SECONDS=300, JWT_JWKS_REFRESH_COOLDOWN_SECONDS=0):
        assert timed_get()[0] == 200
        idp.keys.append(public_jwk(new_key, kid="k2"))

        assert Client().get(ME, HTTP_AUTHORIZATION=rotated).status_code == 200
        assert timed_get()[0] == 200

    assert idp.fetches == 2


def test_a_redirect_of_the_key_endpoint_is_not_followed(idp: JwksServer) -> None:
    with JwksServer([public_jwk(KEY, kid="k1")]) as elsewhere, jwks(idp):
        idp.status, idp.location = 302, elsewhere.url

        assert timed_get()[0] == 503

    assert (idp.fetches, elsewhere.fetches) == (1, 0)
