"""Hostile bodies: deeply nested JSON is a 400 and an oversized body a 413, problem+json, on every API
endpoint (client, internal, webhook), never a 500; nothing is written."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client, override_settings

from billing.models import Order
from gdpr.models import DataSubjectRequest
from payments_project.json_body import MAX_DEPTH, MalformedJson, json_loads
from tests.payments_project.test_bad_tokens import _routes
from tests.support.auth import SpiffePki, bearer
from tests.support.stripe_events import signed
from webhooks.models import WebhookEvent

PROBLEM = "application/problem+json"
CALLER = "spiffe://jia.test/ns/catalog/sa/catalog"
DEEP = "[" * 20_000 + "]" * 20_000  # 40 KB: far past the interpreter's recursion limit
JUST_TOO_DEEP = json.dumps({"price_id": json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)})
BODY_ROUTES = [
    "/api/v1/checkout/sessions",
    "/api/v1/family/invitations",
    "/api/v1/gdpr/exports",
    "/api/v1/gdpr/erasure",
    "/internal/v1/entitlements/check",
]

pytestmark = pytest.mark.django_db


@pytest.fixture
def service(tmp_path: Path) -> Iterator[dict[str, str]]:
    pki = SpiffePki("jia.test")
    with override_settings(
        SERVICE_AUTH_MODE="xfcc",
        SPIFFE_TRUST_BUNDLE=str(pki.write_bundle(tmp_path)),
        SPIFFE_TRUST_DOMAIN="jia.test",
        SERVICE_ALLOWLIST={"entitlements.read": [CALLER]},
    ):
        yield {"HTTP_X_FORWARDED_CLIENT_CERT": pki.xfcc(pki.leaf(CALLER))}


def _post(path: str, body: str, service: dict[str, str]) -> object:
    credentials = service if path.startswith("/internal/") else {"HTTP_AUTHORIZATION": bearer(uuid.uuid4())}
    client = Client(raise_request_exception=False)
    return client.post(path, body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1", **credentials)


def test_the_body_routes_listed_here_are_routed() -> None:
    assert set(BODY_ROUTES) <= set(_routes())


@pytest.mark.parametrize("body", [DEEP, JUST_TOO_DEEP], ids=["recursion", "past-max-depth"])
@pytest.mark.parametrize("path", BODY_ROUTES)
def test_deeply_nested_json_is_a_400_problem_and_writes_nothing(path: str, body: str, service: dict[str, str]) -> None:
    response = _post(path, body, service)

    assert response.status_code == 400, response.content[:300]  # type: ignore[attr-defined]
    assert response["Content-Type"] == PROBLEM  # type: ignore[index]
    assert "nested deeper" in response.json()["detail"]  # type: ignore[attr-defined]
    assert not Order.objects.exists() and not DataSubjectRequest.objects.exists()


@pytest.mark.parametrize("path", [p for p in _routes() if p.startswith(("/api/v1/", "/internal/v1/"))])
def test_no_api_route_answers_a_nested_body_with_a_500(path: str, service: dict[str, str]) -> None:
    response = _post(path, DEEP, service)

    assert response.status_code < 500, response.content[:300]  # type: ignore[attr-defined]
    assert response["Content-Type"] == PROBLEM or response.status_code < 400  # type: ignore[index]


@pytest.mark.parametrize("path", [p for p in _routes() if p.startswith(("/api/", "/internal/"))])
def test_a_body_over_the_limit_is_a_413_problem_on_every_api_route(path: str, service: dict[str, str]) -> None:
    body = json.dumps({"price_id": "x" * (128 * 1024)})

    response = _post(path, body, service)

    assert response.status_code == 413, response.content[:300]  # type: ignore[attr-defined]
    assert response["Content-Type"] == PROBLEM  # type: ignore[index]
    assert not Order.objects.exists()


def test_a_signed_webhook_nested_too_deep_is_a_400_problem_and_is_not_stored() -> None:
    body = '{"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": ' + DEEP + "}}"

    response = Client(raise_request_exception=False).post(
        "/webhooks/stripe/", body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signed(body)
    )

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "text", ["NaN", '{"a": Infinity}', "[1,", b"\xff\xfe\x00", "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)]
)
def test_json_loads_refuses_what_is_not_plain_bounded_json(text: str | bytes) -> None:
    with pytest.raises(MalformedJson):
        json_loads(text)


def test_json_loads_reads_json_up_to_the_maximum_depth() -> None:
    assert json_loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert json_loads('{"a": [{"b": 1.5}]}') == {"a": [{"b": 1.5}]}
