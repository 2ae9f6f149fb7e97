"""The entitlement endpoints: client (JWT) and internal (SPIFFE service identity)."""

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import Subscription
from tests.entitlements.conftest import CALLER, STRANGER, CountingConnectionPool, as_user
from tests.entitlements.factories import family_of, plan_with, subscribe
from tests.support.auth import SpiffePki

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
CHECK = "/internal/v1/entitlements/check"


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:jia:payments:problem:{code}"
    return body


def check(client: Client, service: dict[str, str], user_ids: list[Any], feature: Any = "hd") -> Any:
    body = json.dumps({"user_ids": [str(u) for u in user_ids], "feature": feature})
    return client.post(CHECK, data=body, content_type="application/json", **service)


# --- client API -----------------------------------------------------------------------------------


def test_the_caller_sees_their_features_with_source_and_expiry(client: Client) -> None:
    owner, bob = uuid.uuid4(), uuid.uuid4()
    ends = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    subscribe(owner, plan_with(["hd", "kids"], family_seats=2))
    subscribe(bob, plan_with(["studio"]), period_end=ends, cancel_at_period_end=True)
    family_of(owner, bob)

    response = client.get("/api/v1/entitlements", **as_user(bob))

    assert response.status_code == 200
    assert response.json() == {
        "user_id": str(bob),
        "features": [
            {"key": "hd", "source": "family", "expires_at": None},
            {"key": "kids", "source": "family", "expires_at": None},
            {"key": "studio", "source": "own", "expires_at": ends.isoformat().replace("+00:00", "Z")},
        ],
    }


def test_a_single_check_says_yes_or_no_and_a_warm_one_touches_no_database(
    client: Client,
    django_assert_num_queries,  # type: ignore[no-untyped-def]
) -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))
    client.get("/api/v1/entitlements/hd", **as_user(user))  # warms the cache

    with django_assert_num_queries(0):
        yes = client.get("/api/v1/entitlements/hd", **as_user(user))
        no = client.get("/api/v1/entitlements/4k", **as_user(user))

    assert (yes.status_code, yes.json()) == (200, {"feature": "hd", "entitled": True})
    assert (no.status_code, no.json()) == (200, {"feature": "4k", "entitled": False})


def test_past_due_beyond_the_grace_period_is_a_no(client: Client) -> None:
    user = uuid.uuid4()
    subscribe(
        user,
        plan_with(["hd"]),
        status=Subscription.Status.PAST_DUE,
        period_start=timezone.now() - timedelta(days=8),
    )

    assert client.get("/api/v1/entitlements/hd", **as_user(user)).json()["entitled"] is False
    with override_settings(ENTITLEMENTS_PAST_DUE_GRACE_DAYS=10):
        assert client.get("/api/v1/entitlements", **as_user(uuid.uuid4())).status_code == 200
        other = uuid.uuid4()
        subscribe(other, plan_with(["4k"]), status="past_due", period_start=timezone.now() - timedelta(days=8))
        assert client.get("/api/v1/entitlements/4k", **as_user(other)).json()["entitled"] is True


def test_a_malformed_feature_key_is_a_validation_error(client: Client) -> None:
    body = problem(client.get("/api/v1/entitlements/not%20a%20key", **as_user(uuid.uuid4())), 400, "validation_error")
    assert body["errors"] == [{"field": "feature_key", "message": "1 to 64 letters, digits, '-' or '_'"}]


def test_the_client_endpoints_need_a_token(client: Client) -> None:
    problem(client.get("/api/v1/entitlements"), 401, "not_authenticated")
    problem(client.get("/api/v1/entitlements/hd"), 401, "not_authenticated")


# --- internal API ---------------------------------------------------------------------------------


def test_a_service_reads_a_users_entitlements_with_the_client_body(client: Client, service: dict[str, str]) -> None:
    user = uuid.uuid4()
    subscribe(user, plan_with(["hd"]))

    internal = client.get(f"/internal/v1/users/{user}/entitlements", **service)

    assert internal.status_code == 200
    assert internal.json() == client.get("/api/v1/entitlements", **as_user(user)).json()


def test_the_bulk_check_answers_for_every_user(client: Client, service: dict[str, str]) -> None:
    owner, member, solo, nobody = (uuid.uuid4() for _ in range(4))
    subscribe(owner, plan_with(["hd"], family_seats=1))
    family_of(owner, member)
    subscribe(solo, plan_with(["hd"]))

    response = check(client, service, [owner, member, solo, nobody, solo])

    assert response.status_code == 200
    assert response.json() == {"results": {str(owner): True, str(member): True, str(solo): True, str(nobody): False}}


def test_the_bulk_check_costs_the_same_for_one_user_as_for_a_thousand(
    client: Client, service: dict[str, str], round_trips: type[CountingConnectionPool]
) -> None:
    thousand = [uuid.uuid4() for _ in range(1000)]
    subscribe(thousand[0], plan_with(["hd"]))

    def cost(users: list[uuid.UUID]) -> tuple[int, int]:
        round_trips.checkouts = 0
        with CaptureQueriesContext(connection) as queries:
            assert check(client, service, users).status_code == 200
        return len(queries), round_trips.checkouts

    check(client, service, [uuid.uuid4()])  # the rate limit's counter exists from here on: same cost each time
    cold = cost([uuid.uuid4()]), cost(thousand)
    warm = cost([thousand[0]]), cost(thousand)

    assert cold[0] == cold[1]
    assert cold[0][0] == 2  # the resolver's two queries, nothing else
    assert warm[0] == warm[1]
    assert warm[0][0] == 0


@override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "internal": "1000/m"})  # hits reported 20 at a time
def test_a_bulk_check_this_process_remembers_costs_no_query_and_no_round_trip(
    client: Client, service: dict[str, str], round_trips: type[CountingConnectionPool]
) -> None:
    thousand = [uuid.uuid4() for _ in range(1000)]
    subscribe(thousand[0], plan_with(["hd"]))
    check(client, service, thousand)  # from the database, then cached
    check(client, service, thousand)  # read back from Redis, and remembered

    round_trips.checkouts = 0
    with CaptureQueriesContext(connection) as queries:
        response = check(client, service, thousand)

    assert response.json()["results"] == {str(user): user == thousand[0] for user in thousand}
    assert (len(queries), round_trips.checkouts) == (0, 0)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_ids": [str(uuid.uuid4()) for _ in range(1001)], "feature": "hd"}, "user_ids"),
        ({"user_ids": [], "feature": "hd"}, "user_ids"),
        ({"user_ids": ["not-a-uuid"], "feature": "hd"}, "user_ids[0]"),
        # two well-formed ids in one item, beside another: not two ids
        ({"user_ids": [f"{uuid.uuid4()},{uuid.uuid4()}", str(uuid.uuid4())], "feature": "hd"}, "user_ids[0]"),
        ({"user_ids": [str(uuid.uuid4()), 7], "feature": "hd"}, "user_ids[1]"),
        ({"user_ids": "abc", "feature": "hd"}, "user_ids"),
        ({"user_ids": [str(uuid.uuid4())]}, "feature"),
        ({"user_ids": [str(uuid.uuid4())], "feature": "no spaces"}, "feature"),
    ],
)
def test_a_malformed_bulk_check_is_a_400_naming_the_field(
    client: Client, service: dict[str, str], payload: dict[str, Any], field: str
) -> None:
    response = client.post(CHECK, data=json.dumps(payload), content_type="application/json", **service)

    body = problem(response, 400, "validation_error")
    assert [error["field"] for error in body["errors"]] == [field]


def test_more_ids_than_configured_are_refused(client: Client, service: dict[str, str]) -> None:
    with override_settings(ENTITLEMENTS_BULK_MAX_IDS=2):
        body = problem(check(client, service, [uuid.uuid4() for _ in range(3)]), 400, "validation_error")

    assert body["errors"] == [{"field": "user_ids", "message": "At most 2 user ids per request, not 3."}]


def test_the_internal_api_needs_an_allowed_service_identity(
    client: Client, service: dict[str, str], pki: SpiffePki
) -> None:
    user = uuid.uuid4()
    stranger = {"HTTP_X_FORWARDED_CLIENT_CERT": pki.xfcc(pki.leaf(STRANGER))}

    problem(client.get(f"/internal/v1/users/{user}/entitlements"), 401, "not_authenticated")
    problem(check(client, {}, [user]), 401, "not_authenticated")
    problem(client.get(f"/internal/v1/users/{user}/entitlements", **stranger), 403, "service_forbidden")
    problem(check(client, stranger, [user]), 403, "service_forbidden")
    # A user's JWT is no service identity.
    problem(client.get(f"/internal/v1/users/{user}/entitlements", **as_user(user)), 401, "not_authenticated")


def test_the_bulk_check_answers_each_id_in_canonical_form_however_it_was_written(
    client: Client, service: dict[str, str]
) -> None:
    buyer, other = uuid.uuid4(), uuid.uuid4()
    subscribe(buyer, plan_with(["hd"]))

    response = check(client, service, [str(buyer).upper(), other.hex, str(buyer)])

    assert response.status_code == 200
    assert response.json() == {"results": {str(buyer): True, str(other): False}}


def test_the_bulk_check_is_rate_limited_per_service_with_its_hits_reported_in_batches(
    client: Client, service: dict[str, str], pki: SpiffePki
) -> None:
    users = [uuid.uuid4()]
    with (
        time_machine.travel(timezone.now(), tick=False),  # one rate-limit window throughout
        override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "internal": "100/m"}),  # reported 2 at a time
    ):
        statuses = [check(client, service, users).status_code for _ in range(101)]
        # A refused certificate is counted against the caller's IP, in the same group.
        refused = check(client, {"HTTP_X_FORWARDED_CLIENT_CERT": pki.xfcc(pki.leaf(CALLER, expired=True))}, users)
        window = int(time.time() // 60)

    assert statuses == [200] * 100 + [429]
    assert caches["default"].get(f"rl:internal:60:user:{CALLER}:{window}") == 100  # every pair of hits reported
    problem(refused, 401, "service_unauthenticated")
    assert caches["default"].get(f"rl:internal:60:ip:127.0.0.1:{window}") == 1
