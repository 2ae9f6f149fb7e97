"""A JSON body's unknown fields are refused (400 problem+json naming each), on every write operation of the
schema: a typo must not silently do something else. A new endpoint is checked here as soon as it exists."""

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from billing.models import Order
from entitlements.models import FamilyGroup
from gdpr.models import DataSubjectRequest
from tests.billing.factories import PriceFactory
from tests.support.contract import WRITE_METHODS, every_door_open, generated_schema, operations

PROBLEM = "application/problem+json"


def _path_with(path: str, operation: dict[str, Any]) -> str:
    """The path with each parameter filled: a fresh UUID where it is one, a plain word otherwise."""
    formats = {p["name"]: p.get("schema", {}).get("format") for p in operation.get("parameters", [])}
    return re.sub(r"\{([^}]+)\}", lambda m: str(uuid.uuid4()) if formats.get(m.group(1)) == "uuid" else "token-1", path)


def _header_params(operation: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: f"key-{uuid.uuid4()}" for p in operation.get("parameters", []) if p["in"] == "header"}


@pytest.mark.django_db
def test_every_write_operation_refuses_an_unknown_field_naming_it(client: Client, tmp_path: Path) -> None:
    writes = [(m, p, o) for m, p, o in operations(generated_schema()) if m in WRITE_METHODS]
    assert len(writes) >= 9  # checkout, cancel, family, invitations, gdpr, the bulk check, ...

    refused = []
    with every_door_open(tmp_path, uuid.uuid4()) as credentials:
        for method, path, operation in writes:
            response = client.generic(
                method.upper(),
                _path_with(path, operation),
                json.dumps({"zz_unknown_field": 1}),
                content_type="application/json",
                headers={**credentials(path), **_header_params(operation)},
            )
            body = response.json() if response["Content-Type"] == PROBLEM else {}
            named = {"field": "zz_unknown_field", "message": "Unknown field"} in body.get("errors", [])
            refused.append((method, path, response.status_code, named))

    assert [r for r in refused if r[2:] != (400, True)] == []
    assert not Order.objects.exists() and not FamilyGroup.objects.exists() and not DataSubjectRequest.objects.exists()


@pytest.mark.django_db
def test_a_misspelt_checkout_field_is_named_and_nothing_is_ordered(client: Client, tmp_path: Path) -> None:
    price = PriceFactory()
    body = {
        "price_id": str(price.id),
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/no",
        "cancel_urll": "https://app.example/typo",
    }
    with every_door_open(tmp_path, uuid.uuid4()) as credentials:
        response = client.post(
            "/api/v1/checkout/sessions",
            body,
            content_type="application/json",
            headers={**credentials("/api/"), "Idempotency-Key": "typo-1"},
        )

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"] == "urn:jia:payments:problem:validation_error"
    assert response.json()["errors"] == [{"field": "cancel_urll", "message": "Unknown field"}]
    assert not Order.objects.exists()


def test_every_request_body_is_documented_as_closed() -> None:
    schema = generated_schema()
    bodies = {
        media["schema"]["$ref"].rsplit("/", 1)[1]
        for _, _, operation in operations(schema)
        for media in operation.get("requestBody", {}).get("content", {}).values()
    }

    assert bodies
    assert {
        name: schema["components"]["schemas"][name].get("additionalProperties") for name in bodies
    } == dict.fromkeys(bodies, False)


@pytest.mark.django_db
def test_an_id_is_a_uuid_string_never_a_number(client: Client, tmp_path: Path) -> None:
    """Found by Schemathesis: DRF's UUIDField took `500` as UUID(int=500) and answered 200."""
    with every_door_open(tmp_path, uuid.uuid4()) as credentials:
        response = client.post(
            "/internal/v1/entitlements/check",
            {"user_ids": [500], "feature": "hd"},
            content_type="application/json",
            headers=credentials("/internal/"),
        )

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "user_ids[0]", "message": "Must be a valid UUID."}]
