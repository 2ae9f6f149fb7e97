"""The entitlement checks and the checkout skip the middleware they do not need (HotPathMiddleware), and
keep what they do."""

import uuid

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from billing.models import Price
from tests.billing.checkout.support import checkout
from tests.billing.factories import PriceFactory
from tests.support.auth import bearer
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db


def test_an_entitlement_check_skips_the_browser_middleware_but_keeps_ids_timing_and_security_headers(
    client: Client,
) -> None:
    response = client.get(
        "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=bearer(uuid.uuid4()), HTTP_X_REQUEST_ID="abcdefgh-1234"
    )

    assert response.status_code == 200
    assert response.json() == {"feature": "hd", "entitled": False}
    assert "X-Frame-Options" not in response  # XFrameOptionsMiddleware (and the rest below) never ran
    assert response["X-Request-ID"] == "abcdefgh-1234"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Server-Timing"].startswith("app;dur=")


def test_other_api_paths_still_go_through_every_middleware(client: Client) -> None:
    response = client.get("/api/v1/family", HTTP_AUTHORIZATION=bearer(uuid.uuid4()))

    assert response.status_code == 404
    assert response["X-Frame-Options"] == "DENY"


def test_hot_path_errors_are_still_problem_json(client: Client) -> None:
    unauthenticated = client.get("/api/v1/entitlements/hd")
    unresolved = client.get("/api/v1/entitlements/hd/extra/")
    bad_key = client.get("/api/v1/entitlements/no%20spaces", HTTP_AUTHORIZATION=bearer(uuid.uuid4()))

    for response, status in ((unauthenticated, 401), (unresolved, 404), (bad_key, 400)):
        assert response.status_code == status, response.content
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["status"] == status


def test_a_webhook_delivery_skips_the_browser_middleware_and_its_errors_keep_their_problem_type(
    client: Client,
) -> None:
    event = stripe_event("customer.created", {"id": "cus_hot", "object": "customer"})

    stored = client.post("/webhooks/stripe/", **delivery(event))
    unsigned = client.post("/webhooks/stripe/", data=b"{}", content_type="application/json")
    not_json = client.post("/webhooks/stripe/", data=b"x", content_type="text/plain")

    assert stored.status_code == 200, stored.content
    assert "X-Frame-Options" not in stored  # XFrameOptionsMiddleware (and the rest below) never ran
    assert stored["Server-Timing"].startswith("app;dur=")
    # the view's own errors are answered as Django's handler would have (ProblemJsonMiddleware.process_exception)
    for response, status, code in ((unsigned, 400, "webhook_rejected"), (not_json, 415, "unsupported_media_type")):
        assert response.status_code == status, response.content
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["type"] == "urn:jia:payments:problem:" + code


@pytest.mark.django_db(transaction=True)  # the order is committed before Stripe is called
def test_a_checkout_skips_the_browser_middleware_but_keeps_ids_timing_and_security_headers(
    client: Client, stripe_fake: StripeFake
) -> None:
    price: Price = PriceFactory(stripe_price_id="price_hot", unit_amount=1299)

    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    counted_before = {status: responses_counted(status, "billing-checkout") for status in ("201", "400")}

    response = client.post(
        "/api/v1/checkout/sessions",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=bearer(uuid.uuid4()),
        HTTP_IDEMPOTENCY_KEY="key-1",
        HTTP_X_REQUEST_ID="abcdefgh-1234",
    )
    missing_key = checkout(client, uuid.uuid4(), price, key=None)

    assert response.status_code == 201, response.content
    assert "X-Frame-Options" not in response  # XFrameOptionsMiddleware (and the rest below) never ran
    assert response["X-Request-ID"] == "abcdefgh-1234"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Server-Timing"].startswith("app;dur=")
    assert response["Location"] == f"/api/v1/orders/{response.json()['order_id']}"
    assert missing_key.status_code == 400
    assert missing_key["Content-Type"] == "application/problem+json"
    # still counted where the HighServerErrorRate alert looks, as django-prometheus's middleware counts
    for status in ("201", "400"):
        assert responses_counted(status, "billing-checkout") == counted_before[status] + 1


def responses_counted(status: str, view: str) -> float:
    labels = {"status": status, "view": view, "method": "POST"}
    return REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels) or 0.0
