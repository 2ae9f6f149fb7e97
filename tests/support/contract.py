"""The API contract as tests meet it: the schema the code generates, the committed one, and credentials that
open every operation of it (a client JWT for /api/, a SPIFFE certificate in XFCC for /internal/)."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiYamlRenderer

from tests.support.auth import SpiffePki, bearer

ROOT = Path(__file__).resolve().parents[2]
COMMITTED_SCHEMA = ROOT / "docs" / "openapi.yaml"
CALLER = "spiffe://jia.test/ns/contract/sa/contract"
WRITE_METHODS = ("post", "put", "patch", "delete")


def generated_schema() -> dict[str, Any]:
    """The schema as `make openapi` writes it (through YAML, so the types are the file's)."""
    return yaml.safe_load(generated_schema_yaml())


def generated_schema_yaml() -> str:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return OpenApiYamlRenderer().render(schema, renderer_context={}).decode()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every client and internal operation: (method, path, operation)."""
    for path, item in schema["paths"].items():
        if path.startswith(("/api/v1/", "/internal/v1/")):
            for method, operation in item.items():
                yield method, path, operation


@contextmanager
def every_door_open(tmp_path: Path, user_id: uuid.UUID, email: str = "contract@example.com") -> Iterator[Any]:
    """Settings under which CALLER may use every internal scope; yields `headers(path)`, the credential
    headers (HTTP header names) of a request to `path`: the user's JWT, or CALLER's XFCC."""
    pki = SpiffePki("jia.test")
    with override_settings(
        SERVICE_AUTH_MODE="xfcc",
        SPIFFE_TRUST_BUNDLE=str(pki.write_bundle(tmp_path)),
        SPIFFE_TRUST_DOMAIN="jia.test",
        SERVICE_ALLOWLIST={scope: [CALLER] for scope in settings.SERVICE_SCOPES},
    ):
        xfcc = pki.xfcc(pki.leaf(CALLER))
        jwt = bearer(user_id, email=email)

        def headers(path: str) -> dict[str, str]:
            if path.startswith("/internal/"):
                return {"X-Forwarded-Client-Cert": xfcc}
            return {"Authorization": jwt}

        yield headers
