"""The entitlement checks skip the middleware they do not need (HotPathMiddleware), and keep what they do."""

import uuid

import pytest
from django.test import Client

from tests.support.auth import bearer

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
