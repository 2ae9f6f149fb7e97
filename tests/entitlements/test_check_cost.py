"""The single entitlement check is what other services call on every request: a cached one costs one
Redis round trip (the rate limit counted in the same script as the cache read), no query, no signature
check for a token seen before — and it is still rate limited."""

import uuid

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from payments_project import auth
from tests.entitlements.conftest import CountingConnectionPool, as_user
from tests.entitlements.factories import plan_with, subscribe

pytestmark = pytest.mark.django_db


def test_a_cached_check_costs_one_round_trip_and_no_query(
    client: Client, round_trips: type[CountingConnectionPool]
) -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    headers = as_user(user)
    assert client.get("/api/v1/entitlements/hd", **headers).json() == {"feature": "hd", "entitled": True}

    round_trips.checkouts = 0
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/entitlements/hd", **headers)

    assert response.json() == {"feature": "hd", "entitled": True}
    assert (len(queries), round_trips.checkouts) == (0, 1)
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
