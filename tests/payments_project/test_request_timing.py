"""The latency objectives measure our own time: a request's duration less the time its Stripe calls took."""

import time
import uuid

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from tests.billing.factories import PriceFactory
from tests.support.auth import bearer
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)
METRIC = "payments_http_request_own_duration_seconds"


def observed(view: str) -> tuple[float, float]:
    """(count, sum) of the histogram for one view."""
    labels = {"view": view}
    return (
        REGISTRY.get_sample_value(f"{METRIC}_count", labels) or 0.0,
        REGISTRY.get_sample_value(f"{METRIC}_sum", labels) or 0.0,
    )


def test_a_checkout_waiting_on_a_slow_stripe_is_measured_without_stripe_s_time(
    client: Client, stripe_fake: StripeFake
) -> None:
    price = PriceFactory(stripe_price_id="price_timing")
    stripe_fake.on("POST /v1/checkout/sessions", lambda request: time.sleep(1.5))  # Stripe takes 1.5 s
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    count, total = observed("billing-checkout")

    started = time.perf_counter()
    response = client.post(
        "/api/v1/checkout/sessions",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=bearer(uuid.uuid4()),
        HTTP_IDEMPOTENCY_KEY="timing-1",
    )
    wall = time.perf_counter() - started

    assert response.status_code == 201
    after_count, after_total = observed("billing-checkout")
    assert after_count == count + 1
    own = after_total - total
    assert 0 < own <= wall - 1.5  # Stripe's 1.5 s are not ours


def test_each_view_is_measured_under_its_name_and_unknown_paths_under_one_label(client: Client) -> None:
    check, unresolved = observed("entitlement-check")[0], observed("unresolved")[0]

    client.get("/api/v1/entitlements/hd", HTTP_AUTHORIZATION=bearer(uuid.uuid4()))
    client.get(f"/api/v1/no-such-thing/{uuid.uuid4()}")

    assert observed("entitlement-check")[0] == check + 1
    assert observed("unresolved")[0] == unresolved + 1


def test_every_response_says_our_own_time_in_server_timing(client: Client) -> None:
    started = time.perf_counter()
    response = client.get("/api/v1/entitlements/hd", HTTP_AUTHORIZATION=bearer(uuid.uuid4()))
    wall_ms = (time.perf_counter() - started) * 1000

    assert response.status_code == 200
    name, duration = response["Server-Timing"].split(";dur=")
    assert name == "app"
    assert 0 <= float(duration) <= wall_ms
