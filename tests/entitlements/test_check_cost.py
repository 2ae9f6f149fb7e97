"""The single entitlement check is what other services call on every request: once this process has
read a user's cached answer it costs no Redis round trip (remembered, kept true by Redis's pushes), no
query, no signature check for a token seen before, and its rate limit's hits go to Redis in batches —
and it is still rate limited."""

import time
import uuid

import pytest
import time_machine
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from payments_project import auth
from tests.entitlements.conftest import CountingConnectionPool, as_user
from tests.entitlements.factories import plan_with, subscribe
from tests.support.auth import bearer

pytestmark = pytest.mark.django_db


@override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "api_read": "1000/m"})  # hits reported 20 at a time
def test_a_cached_check_costs_one_round_trip_then_none_and_no_query(
    client: Client, round_trips: type[CountingConnectionPool]
) -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    headers = as_user(user)
    assert client.get("/api/v1/entitlements/hd", **headers).json() == {"feature": "hd", "entitled": True}

    costs = []
    for _ in range(2):
        round_trips.checkouts = 0
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/api/v1/entitlements/hd", **headers)
        assert response.json() == {"feature": "hd", "entitled": True}
        costs.append((len(queries), round_trips.checkouts))

    assert costs == [(0, 1), (0, 0)]  # read from Redis (and remembered), then from memory
    assert len(auth.client_token_backend().verified) >= 1


def test_the_check_is_still_rate_limited_per_user(client: Client) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "api_read": "3/m"}):
        statuses = [client.get("/api/v1/entitlements/hd", **as_user(alice)).status_code for _ in range(4)]
        limited = client.get("/api/v1/entitlements/hd", **as_user(alice))
        other = client.get("/api/v1/entitlements/hd", **as_user(bob))

    assert statuses[:3] == [200, 200, 200]
    assert limited.status_code == 429
    assert limited["Content-Type"] == "application/problem+json"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert other.status_code == 200


def test_with_its_hits_reported_in_batches_the_check_still_stops_at_the_limit(
    client: Client, round_trips: type[CountingConnectionPool]
) -> None:
    alice = uuid.uuid4()
    headers = as_user(alice)
    with (
        time_machine.travel(timezone.now(), tick=False),  # one rate-limit window throughout
        override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "api_read": "100/m"}),  # reported 2 at a time
    ):
        statuses = [client.get("/api/v1/entitlements/hd", **headers).status_code for _ in range(101)]
        window = int(time.time() // 60)

    assert statuses == [200] * 100 + [429]
    assert caches["default"].get(f"rl:api_read:60:user:{alice}:{window}") == 100  # every pair of hits reported


def test_the_plain_check_view_answers_as_the_drf_view_does(client: Client) -> None:
    headers = as_user(uuid.uuid4())
    plain = client.get("/api/v1/entitlements/hd", **headers)
    # An Accept header the plain view leaves to EntitlementDetailApi (DRF's content negotiation).
    drf = client.get("/api/v1/entitlements/hd", HTTP_ACCEPT="application/json, text/plain", **headers)

    assert (plain.status_code, plain.content) == (drf.status_code, drf.content)
    assert {name: plain.get(name) for name in ("Content-Type", "Vary", "Allow")} == {
        name: drf.get(name) for name in ("Content-Type", "Vary", "Allow")
    }


@pytest.mark.parametrize(
    ("query", "extra", "status"),
    [
        ("", {"HTTP_ACCEPT": ""}, 406),  # present but empty: DRF's negotiation finds no renderer
        ("?format=xml", {}, 404),  # a format DRF has no renderer for
    ],
)
def test_a_check_drf_would_not_answer_in_json_gets_drfs_answer(
    client: Client, query: str, extra: dict[str, str], status: int
) -> None:
    headers = as_user(uuid.uuid4())

    refused = client.get(f"/api/v1/entitlements/hd{query}", **extra, **headers)

    assert refused.status_code == status
    assert refused["Content-Type"] == "application/problem+json"
    assert refused["Allow"] == "GET, HEAD, OPTIONS"  # EntitlementDetailApi's answer


@override_settings(JWT_LEEWAY_SECONDS=0)
def test_the_check_remembers_its_caller_until_the_token_expires(client: Client) -> None:
    """A repeated Authorization header is answered from the principal remembered by its hash (no token
    or principal built again), never past the token's exp."""
    expires = int(time.time()) + 60  # travelled to from here, not from a later clock reading
    alice = uuid.uuid4()
    subscribe(alice, plan_with(["hd"]))
    headers = {"HTTP_AUTHORIZATION": bearer(alice, exp=expires)}

    answers = [client.get("/api/v1/entitlements/hd", **headers).json() for _ in range(2)]
    remembered = len(auth.client_token_backend().principals)
    with time_machine.travel(expires + 1, tick=False):
        expired = client.get("/api/v1/entitlements/hd", **headers)

    assert answers == [{"feature": "hd", "entitled": True}] * 2
    assert remembered == 1
    assert expired.status_code == 401
    assert expired["Content-Type"] == "application/problem+json"


def test_a_remembered_caller_is_forgotten_with_the_key_that_verified_them(client: Client) -> None:
    headers = as_user(uuid.uuid4())
    assert client.get("/api/v1/entitlements/hd", **headers).status_code == 200

    with override_settings(JWT_SIGNING_KEY="another-signing-key-0123456789-0123456789-0123"):
        assert client.get("/api/v1/entitlements/hd", **headers).status_code == 401


def test_a_refused_token_is_not_remembered(client: Client) -> None:
    forged = {"HTTP_AUTHORIZATION": bearer(uuid.uuid4())[:-4] + "AAAA"}  # a broken signature

    statuses = [client.get("/api/v1/entitlements/hd", **forged).status_code for _ in range(2)]

    assert statuses == [401, 401]
    assert len(auth.client_token_backend().principals) == 0
