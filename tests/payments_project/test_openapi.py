"""The served OpenAPI schema is valid and lists every route of the contract in ../shared/API.md."""

import re

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

CONTRACT = [
    ("get", "/api/v1/plans"),
    ("post", "/api/v1/checkout/sessions"),
    ("get", "/api/v1/orders/{}"),
    ("get", "/api/v1/subscriptions"),
    ("post", "/api/v1/subscriptions/{}/cancel"),
    ("get", "/api/v1/payments"),
    ("get", "/api/v1/entitlements"),
    ("get", "/api/v1/entitlements/{}"),
    ("get", "/api/v1/family"),
    ("post", "/api/v1/family"),
    ("post", "/api/v1/family/invitations"),
    ("post", "/api/v1/family/invitations/accept"),
    ("post", "/api/v1/family/invitations/{}/accept"),
    ("delete", "/api/v1/family/members/{}"),
    ("post", "/api/v1/gdpr/exports"),
    ("get", "/api/v1/gdpr/exports/{}"),
    ("get", "/api/v1/gdpr/exports/{}/download"),
    ("post", "/api/v1/gdpr/erasure"),
    ("get", "/api/v1/gdpr/erasure/{}"),
    ("get", "/internal/v1/users/{}/entitlements"),
    ("post", "/internal/v1/entitlements/check"),
]


@pytest.mark.django_db
def test_the_served_schema_has_every_route_of_the_contract(client: Client) -> None:
    schema = yaml.safe_load(client.get("/api/schema/").content)

    served = {(method, re.sub(r"\{[^}]+\}", "{}", path)) for path, item in schema["paths"].items() for method in item}
    assert sorted(set(CONTRACT) - served) == []


def test_the_schema_is_valid_openapi_without_warnings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3.1.0")
