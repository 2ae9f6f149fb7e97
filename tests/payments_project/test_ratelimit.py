"""Rate limits: by user when authenticated, by client IP otherwise, and never fooled by forged headers."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory, override_settings

from payments_project.ratelimit import client_ip, rate_limit_key, rate_limited
from payments_project.settings.base import RATE_LIMIT_DEFAULTS, cache_config, rate_limits_from_env
from tests.payments_project.auth_views import CALLS
from tests.support.auth import bearer
from tests.support.proxy import closed_port

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.payments_project.auth_views")]

PROBLEM = "application/problem+json"
ALICE, BOB = uuid.uuid4(), uuid.uuid4()
CHECKOUT = "/api/v1/test/checkout"
ME = "/api/v1/test/me"
WEBHOOK = "/webhooks/test/"


@pytest.fixture(autouse=True)
def _tight_limits() -> Iterator[None]:
    CALLS.clear()
    rates = {**RATE_LIMIT_DEFAULTS, "checkout": "2/m", "api_read": "3/m", "api_write": "2/m", "webhook": "3/m"}
    with override_settings(RATE_LIMITS=rates, TRUSTED_PROXY_COUNT=0):
        yield


def _post(client: Client, path: str, *, user: uuid.UUID | None = None, ip: str = "203.0.113.7", **extra: Any) -> Any:
    if user is not None:
        extra["HTTP_AUTHORIZATION"] = bearer(user)
    return client.post(path, {}, content_type="application/json", REMOTE_ADDR=ip, **extra)


def _assert_limited(response: Any) -> None:
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == PROBLEM
    assert response.json()["status"] == 429
    assert 1 <= int(response["Retry-After"]) <= 60


# --- the answer ------------------------------------------------------------------------------------


def test_over_the_limit_is_429_problem_json_with_retry_after(client: Client) -> None:
    assert [_post(client, CHECKOUT, user=ALICE).status_code for _ in range(2)] == [201, 201]

    response = _post(client, CHECKOUT, user=ALICE)

    _assert_limited(response)
    assert CALLS["checkout"] == 2


# --- keys -------------------------------------------------------------------------------------------


def test_an_authenticated_caller_is_limited_by_user_whatever_their_ip(client: Client) -> None:
    for ip in ("198.51.100.1", "198.51.100.2"):
        assert _post(client, CHECKOUT, user=ALICE, ip=ip).status_code == 201

    _assert_limited(_post(client, CHECKOUT, user=ALICE, ip="198.51.100.3"))


def test_users_behind_one_ip_have_their_own_budgets(client: Client) -> None:
    for _ in range(2):
        assert _post(client, CHECKOUT, user=ALICE).status_code == 201

    assert _post(client, CHECKOUT, user=BOB).status_code == 201


def test_anonymous_callers_are_limited_by_ip(client: Client) -> None:
    for _ in range(3):
        assert client.get("/api/v1/test/public", REMOTE_ADDR="198.51.100.9").status_code == 200

    _assert_limited(client.get("/api/v1/test/public", REMOTE_ADDR="198.51.100.9"))
    assert client.get("/api/v1/test/public", REMOTE_ADDR="198.51.100.10").status_code == 200


def test_a_forged_x_forwarded_for_does_not_buy_a_fresh_budget_without_trusted_proxies(client: Client) -> None:
    for n in range(3):
        assert client.get("/api/v1/test/public", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code == 200

    _assert_limited(client.get("/api/v1/test/public", HTTP_X_FORWARDED_FOR="10.0.0.99"))


def test_behind_a_trusted_proxy_a_forged_leftmost_address_is_ignored(client: Client) -> None:
    with override_settings(TRUSTED_PROXY_COUNT=1):
        for n in range(3):
            forwarded = f"10.0.0.{n}, 198.51.100.20"  # the client wrote 10.0.0.n; our proxy appended the real one
            response = client.get("/api/v1/test/public", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR=forwarded)
            assert response.status_code == 200

        _assert_limited(
            client.get("/api/v1/test/public", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.20")
        )
        assert (
            client.get("/api/v1/test/public", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="198.51.100.21").status_code
            == 200
        )


def test_the_default_throttle_limits_every_api_view_by_method(client: Client) -> None:
    for _ in range(3):
        assert client.get(ME, HTTP_AUTHORIZATION=bearer(ALICE)).status_code == 200
    _assert_limited(client.get(ME, HTTP_AUTHORIZATION=bearer(ALICE)))

    for _ in range(2):
        assert _post(client, ME, user=BOB).status_code == 200
    _assert_limited(_post(client, ME, user=BOB))


def test_the_decorator_works_on_a_drf_view_method(client: Client) -> None:
    for _ in range(2):
        assert _post(client, "/api/v1/test/decorated", user=ALICE).status_code == 200

    _assert_limited(_post(client, "/api/v1/test/decorated", user=ALICE))
    assert CALLS["decorated"] == 2


def test_the_webhook_is_limited_by_ip_on_a_plain_django_view(client: Client) -> None:
    for _ in range(3):
        assert _post(client, WEBHOOK, ip="198.51.100.30").status_code == 200

    _assert_limited(_post(client, WEBHOOK, ip="198.51.100.30"))
    assert _post(client, WEBHOOK, ip="198.51.100.31").status_code == 200
    assert CALLS["webhook"] == 4


def test_the_webhook_is_limited_by_ip_even_with_a_token(client: Client) -> None:
    for user in (ALICE, BOB, uuid.uuid4()):
        assert _post(client, WEBHOOK, user=user, ip="198.51.100.40").status_code == 200

    _assert_limited(_post(client, WEBHOOK, user=uuid.uuid4(), ip="198.51.100.40"))


def test_django_ratelimits_own_decorator_still_answers_429_problem_json(client: Client) -> None:
    assert client.get("/api/v1/test/legacy").status_code == 200

    _assert_limited(client.get("/api/v1/test/legacy"))


def test_the_counters_live_in_the_shared_cache(client: Client) -> None:
    _post(client, CHECKOUT, user=ALICE)
    _post(client, CHECKOUT, user=ALICE)
    cache.clear()  # another process would see the same counters; clearing them resets the budget

    assert _post(client, CHECKOUT, user=ALICE).status_code == 201


def test_a_cache_outage_fails_open(client: Client) -> None:
    with override_settings(CACHES=cache_config(f"redis://127.0.0.1:{closed_port()}/0")):
        for _ in range(4):
            assert _post(client, CHECKOUT, user=ALICE).status_code == 201


# --- client_ip ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "remote", "forwarded", "expected"),
    [
        (0, "203.0.113.5", "", "203.0.113.5"),
        (0, "203.0.113.5", "1.1.1.1", "203.0.113.5"),  # no proxy trusted: the header is the client's
        (1, "10.0.0.1", "198.51.100.7", "198.51.100.7"),
        (1, "10.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # forged leftmost ignored
        (2, "10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1", "198.51.100.7"),
        (2, "10.0.0.2", "198.51.100.7", "10.0.0.2"),  # fewer hops than proxies: not through ours
        (1, "10.0.0.1", "not-an-ip", "10.0.0.1"),
        (1, "10.0.0.1", "2001:DB8::1", "2001:db8::1"),  # normalised
        (0, "", "", ""),
    ],
)
def test_client_ip_trusts_only_the_configured_number_of_proxies(
    rf: RequestFactory, trusted: int, remote: str, forwarded: str, expected: str
) -> None:
    request = rf.get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)

    with override_settings(TRUSTED_PROXY_COUNT=trusted):
        assert client_ip(request) == expected


def test_ipv6_clients_share_a_budget_per_slash_64(rf: RequestFactory) -> None:
    one = rf.get("/", REMOTE_ADDR="2001:db8:1:2::1")
    other = rf.get("/", REMOTE_ADDR="2001:db8:1:2:ffff::9")

    assert rate_limit_key(one, by="ip") == rate_limit_key(other, by="ip") == "ip:2001:db8:1:2::"


# --- configuration -------------------------------------------------------------------------------------


def test_rates_have_defaults_and_each_is_overridable_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_CHECKOUT", "5/m")

    rates = rate_limits_from_env(RATE_LIMIT_DEFAULTS)

    assert rates["checkout"] == "5/m"
    assert rates["webhook"] == RATE_LIMIT_DEFAULTS["webhook"]
    assert set(rates) >= {"checkout", "api_read", "api_write", "internal", "webhook"}


@pytest.mark.parametrize("rate", ["fast", "0/m", "10", "10/x", "-1/m", "10/m; drop"])
def test_a_malformed_rate_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, rate: str) -> None:
    monkeypatch.setenv("RATE_LIMIT_CHECKOUT", rate)

    with pytest.raises(ImproperlyConfigured):
        rate_limits_from_env(RATE_LIMIT_DEFAULTS)


def test_an_unknown_group_fails_when_the_view_is_decorated() -> None:
    with pytest.raises(ImproperlyConfigured):
        rate_limited("no-such-group")
