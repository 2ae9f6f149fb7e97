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

# ../shared/API.md beside the repository (CI's clone, /work/main); a worktree under wt/ has it one level higher.
API_MD = next(
    (path for path in (ROOT.parent / "shared" / "API.md", ROOT.parent.parent / "shared" / "API.md") if path.exists()),
    ROOT.parent / "shared" / "API.md",
)
# Promised by API.md and being built on other branches right now (#14, #19, #13): each leaves this list when it
# lands (the test below fails while a listed route is served, or a listed name documented, so nothing lingers).
NOT_BUILT_YET = {
    ("post", "/api/v1/family/invitations/accept"),
    ("post", "/api/v1/subscriptions/{}/resume"),
    ("get", "/api/v1/subscriptions/{}/change-preview"),
    ("post", "/api/v1/subscriptions/{}/change"),
    ("post", "/api/v1/billing-portal/sessions"),
    ("get", "/api/v1/invoices"),
}
NOT_DOCUMENTED_YET = {
    "AWS_S3_ENDPOINT_URL",
    "AWS_S3_REGION_NAME",
    "GDPR_EXPORT_BUCKET",
    "GDPR_EXPORT_STORAGE",
}


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
