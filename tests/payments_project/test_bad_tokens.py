"""A token that is sent is verified everywhere, public routes included: a bad one is a 401, never ignored."""

import base64
import hashlib
import hmac
import re
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.support.auth import bearer, token

PROBLEM = "application/problem+json"
BAD_TOKENS = {
    "garbage": "Bearer garbage",
    "expired": bearer(uuid.uuid4(), exp=1_000_000_000),
    "foreign key": f"Bearer {token(uuid.uuid4(), key='another-signing-key-of-at-least-32-bytes-xx')}",
    "not a uuid sub": f"Bearer {token('alice')}",
}


def _routes(patterns: list[Any] | None = None, prefix: str = "") -> list[str]:
    """Every routed path, with a UUID (or a word) in place of each converter."""
    found: list[str] = []
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        pattern = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += _routes(entry.url_patterns, pattern)
        elif isinstance(entry, URLPattern):
            path = re.sub(r"<uuid:\w+>", str(uuid.uuid4()), pattern)
            path = re.sub(r"<(?:\w+:)?\w+>", "word", path)
            found.append("/" + path.lstrip("^").rstrip("$"))
    return found


API_ROUTES = [path for path in _routes() if path.startswith("/api/")]


def test_the_walk_finds_the_public_catalog_and_the_schema() -> None:
    assert {"/api/v1/plans", "/api/schema/", "/api/v1/checkout/sessions"} <= set(API_ROUTES)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_the_public_plan_list_refuses_a_bad_token_with_a_401(kind: str) -> None:
    response = Client().get("/api/v1/plans", HTTP_AUTHORIZATION=BAD_TOKENS[kind])

    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_the_public_plan_list_answers_without_a_token_and_with_a_good_one() -> None:
    assert Client().get("/api/v1/plans").status_code == 200
    assert Client().get("/api/v1/plans", HTTP_AUTHORIZATION=bearer(uuid.uuid4())).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("path", API_ROUTES)
def test_every_api_route_refuses_a_bad_token_with_a_401(path: str) -> None:
    response = Client().get(path, HTTP_AUTHORIZATION=BAD_TOKENS["expired"])

    assert response.status_code == 401, response.content[:300]
    assert response["Content-Type"] == PROBLEM


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed_by_us(payload_json: str) -> str:
    """A token with any payload text, correctly signed with the test HS256 key."""
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    signing_input = f"{header}.{_b64(payload_json.encode())}"
    signature = hmac.new(settings.JWT_SIGNING_KEY.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"Bearer {signing_input}.{_b64(signature)}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (
            _signed_by_us(f'{{"sub": "{uuid.uuid4()}", "exp": 4102444800, "x": ' + "[" * 1400 + "]" * 1400 + "}"),
            "The token is malformed",
        ),
        (
            f"Bearer {token(uuid.uuid4(), key='another-signing-key-of-at-least-32-bytes-xx')}",
            "The token's signature is invalid",
        ),
        (bearer(uuid.uuid4(), exp=None), "The token lacks the required 'exp' claim"),
        (bearer(uuid.uuid4(), nbf=4102444800), "The token is not valid yet"),
    ],
    ids=["nested-payload", "signature", "missing-exp", "not-yet-valid"],
)
def test_a_refused_token_is_explained_in_our_words_not_the_jwt_librarys(authorization: str, detail: str) -> None:
    response = Client(raise_request_exception=False).get("/api/v1/payments", HTTP_AUTHORIZATION=authorization)

    assert response.status_code == 401
    assert response.json()["detail"] == detail
