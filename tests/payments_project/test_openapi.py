"""The served OpenAPI schema is valid and lists every route of the contract in ../shared/API.md; the committed
one (docs/openapi.yaml) is what the code generates, and agrees with API.md's routes and configuration names."""

import difflib
import re

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

from tests.support.contract import COMMITTED_SCHEMA, ROOT

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


# --- The committed contract (docs/openapi.yaml) ------------------------------------------------------------

# ../shared/API.md beside the repository (a worktree under wt/ has it one level higher); a clone with no
# shared/ beside it (CI's may be anywhere) reads docs/API.md, the copy of the contract this code was built to.
API_MD = next(
    (path for path in (ROOT.parent / "shared" / "API.md", ROOT.parent.parent / "shared" / "API.md") if path.exists()),
    ROOT / "docs" / "API.md",
)
# Promised by API.md and being built on other branches right now (#14, #19, #13): each leaves this list when it
# lands (the test below fails while a listed route is served, or a listed name documented, so nothing lingers).
NOT_BUILT_YET: set[tuple[str, str]] = set()
NOT_DOCUMENTED_YET: set[str] = set()


def _route(method: str, path: str) -> tuple[str, str]:
    return method.lower(), re.sub(r"\{[^}]+\}", "{}", path)


def test_the_committed_schema_is_the_one_the_code_generates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    call_command("spectacular", "--file", str(tmp_path / "openapi.yaml"))  # what `make openapi` runs

    generated = (tmp_path / "openapi.yaml").read_text()
    committed = COMMITTED_SCHEMA.read_text()
    diff = "".join(
        list(difflib.unified_diff(committed.splitlines(True), generated.splitlines(True), "committed", "generated"))[
            :60
        ]
    )
    assert generated == committed, f"docs/openapi.yaml is not what the code generates: run `make openapi`\n{diff}"


def test_every_route_of_api_md_is_in_the_committed_schema() -> None:
    promised = {_route(*match) for match in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)", API_MD.read_text())}
    promised = {route for route in promised if not route[1].startswith("/webhooks/")}  # Stripe's, in README
    schema = yaml.safe_load(COMMITTED_SCHEMA.read_text())
    committed = {_route(method, path) for path, item in schema["paths"].items() for method in item}

    assert len(promised) >= 20
    assert sorted(promised - committed - NOT_BUILT_YET) == []
    assert sorted(NOT_BUILT_YET & committed) == [], "built now: take these out of NOT_BUILT_YET"


def test_every_configuration_name_of_api_md_is_in_the_readme() -> None:
    section = API_MD.read_text().split("\n## Configuration names\n", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section)) - {"NAME_FILE"}  # NAME_FILE: any secret's _FILE
    readme = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "README.md").read_text()))

    assert len(names) >= 25
    assert sorted(names - readme - NOT_DOCUMENTED_YET) == []
    assert sorted(NOT_DOCUMENTED_YET & readme) == [], "documented now: take these out of NOT_DOCUMENTED_YET"


# --- Every operation documents every response it can give ----------------------------------------------------

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _committed_operations() -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    schema = yaml.safe_load(COMMITTED_SCHEMA.read_text())
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        if path.startswith(("/api/", "/internal/"))
        for method, operation in item.items()
    ]


def test_every_error_response_is_a_problem_with_its_types() -> None:
    wrong = [
        (method, path, status)
        for method, path, operation in _committed_operations()
        for status, response in operation["responses"].items()
        if int(status) >= 400
        and (
            response.get("content") != {"application/problem+json": {"schema": PROBLEM_REF}}
            or "urn:jia:payments:problem:" not in response["description"]
        )
    ]
    problem = yaml.safe_load(COMMITTED_SCHEMA.read_text())["components"]["schemas"]["Problem"]

    assert wrong == []
    assert set(problem["required"]) == {"type", "title", "status", "detail", "request_id"}
    assert "not_found" in problem["properties"]["type"]["description"]  # every type, listed once


def test_every_operation_documents_what_any_route_can_answer() -> None:
    missing = []
    for method, path, operation in _committed_operations():
        responses = operation["responses"]
        expected = {"429": "Retry-After", "500": None, "503": "Retry-After"}
        if operation.get("security") and any(operation["security"]):
            expected["401"] = "WWW-Authenticate"
        if path.startswith("/internal/"):
            expected["403"] = None
        for status, header in expected.items():
            if status not in responses or (header and header not in responses[status].get("headers", {})):
                missing.append((method, path, status, header))

    assert missing == []


def test_each_route_names_its_security_scheme_and_its_headers() -> None:
    schema = yaml.safe_load(COMMITTED_SCHEMA.read_text())
    operations = {operation["operationId"]: operation for _, _, operation in _committed_operations()}
    schemes = {operation_id: operation.get("security") for operation_id, operation in operations.items()}

    assert schema["components"]["securitySchemes"]["jwtAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schema["components"]["securitySchemes"]["jwtAuth"]["description"],
    }
    assert schema["components"]["securitySchemes"]["spiffeMutualTLS"]["type"] == "mutualTLS"
    assert "X-Forwarded-Client-Cert" in schema["components"]["securitySchemes"]["spiffeMutualTLS"]["description"]
    assert {key for key, value in schemes.items() if value == [{"spiffeMutualTLS": []}]} == {
        key for key in operations if key.startswith("internal_")
    }
    assert schemes["order_get"] == [{"jwtAuth": []}]
    assert "Location" in operations["checkout_session_create"]["responses"]["201"]["headers"]
    assert "Location" in operations["gdpr_export_create"]["responses"]["202"]["headers"]
    assert "Link" in operations["payments_list"]["responses"]["200"]["headers"]
    assert operations["checkout_session_create"]["responses"]["201"]["links"]["order_get"]["parameters"] == {
        "order_id": "$response.body#/order_id"
    }
