"""Client JWTs: what is accepted, and every way a token is refused (401 problem+json, view never reached)."""

import base64
import hashlib
import hmac
import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator
from rest_framework.permissions import AllowAny

from payments_project import auth
from payments_project.auth import Principal
from tests.payments_project.auth_views import CALLS
from tests.support.auth import JwksServer, bearer, public_jwk, public_pem, token
from tests.support.proxy import closed_port

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.payments_project.auth_views")]

PROBLEM = "application/problem+json"
ALICE = uuid.UUID("0190c6a8-0000-7000-8000-00000000a11c")
ME = "/api/v1/test/me"


@pytest.fixture(autouse=True)
def _reset_calls() -> Iterator[None]:
    CALLS.clear()
    yield
    auth._backend = None  # a JWKS client (and its cache) must not leak into the next test


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], payload: dict[str, Any], *, hmac_key: bytes | None = None) -> str:
    """A token assembled by hand, as an attacker would: any header, signed (or not) with anything."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b"" if hmac_key is None else hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(ALICE), "iat": now, "exp": now + 600, **overrides}


def _get(client: Client, authorization: str, path: str = ME) -> Any:
    return client.get(path, HTTP_AUTHORIZATION=authorization)


def _assert_refused(response: Any, view: str = "me") -> None:
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == PROBLEM
    assert response.json()["status"] == 401
    assert response.json()["type"].endswith(("token_not_valid", "not_authenticated"))
    assert not response.json()["detail"].startswith("{")  # a sentence, not a repr
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert CALLS[view] == 0


# --- accepted ---------------------------------------------------------------------------------


def test_a_valid_token_makes_a_stateless_principal_with_the_sub_email_and_scopes(client: Client) -> None:
    response = _get(client, bearer(ALICE, email="alice@example.com", scope="payments:read family:write"))

    assert response.status_code == 200
    assert response.json() == {
        "id": str(ALICE),
        "email": "alice@example.com",
        "scopes": ["family:write", "payments:read"],
    }


def test_the_principal_is_built_without_any_database_query(client: Client, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        response = _get(client, bearer(ALICE))

    assert response.status_code == 200


def test_claims_cannot_make_a_principal_staff_or_pose_as_attributes() -> None:
    principal = Principal({"sub": str(ALICE), "is_staff": True, "is_superuser": True, "groups": ["finance"]})

    assert principal.is_staff is False
    assert principal.is_superuser is False
    assert principal.id == ALICE
    with pytest.raises(AttributeError):
        _ = principal.role


def test_a_token_just_expired_within_the_leeway_is_accepted(client: Client) -> None:
    with override_settings(JWT_LEEWAY_SECONDS=30):
        response = _get(client, bearer(ALICE, exp=int(time.time()) - 10))

    assert response.status_code == 200


def test_the_bearer_scheme_is_case_insensitive(client: Client) -> None:
    response = _get(client, "bearer " + token(ALICE))

    assert response.status_code == 200


@override_settings(JWT_ISSUER="https://id.jia.example/", JWT_AUDIENCE="jia-payments")
def test_issuer_and_audience_are_accepted_when_they_match(client: Client) -> None:
    response = _get(client, bearer(ALICE))

    assert response.status_code == 200


# --- refused: the token itself -------------------------------------------------------------------


def test_alg_none_is_refused(client: Client) -> None:
    forged = _forged({"alg": "none", "typ": "JWT"}, _claims())

    _assert_refused(_get(client, f"Bearer {forged}"))


def test_a_token_naming_another_hmac_algorithm_is_refused(client: Client) -> None:
    _assert_refused(_get(client, f"Bearer {token(ALICE, algorithm='HS512')}"))


def test_a_bad_signature_is_refused(client: Client) -> None:
    _assert_refused(_get(client, f"Bearer {token(ALICE, key='another-key-of-enough-length-0123456789abcdef')}"))


def test_a_tampered_payload_is_refused(client: Client) -> None:
    header, _, signature = token(ALICE).split(".")
    payload = _b64(json.dumps(_claims(sub=str(uuid.uuid4()))).encode())

    _assert_refused(_get(client, f"Bearer {header}.{payload}.{signature}"))


def test_an_expired_token_is_refused(client: Client) -> None:
    with override_settings(JWT_LEEWAY_SECONDS=30):
        _assert_refused(_get(client, bearer(ALICE, exp=int(time.time()) - 31)))


def test_a_token_not_yet_valid_is_refused(client: Client) -> None:
    with override_settings(JWT_LEEWAY_SECONDS=30):
        _assert_refused(_get(client, bearer(ALICE, nbf=int(time.time()) + 120)))


def test_a_token_issued_in_the_future_is_refused(client: Client) -> None:
    _assert_refused(_get(client, bearer(ALICE, iat=int(time.time()) + 3600)))


def test_a_token_without_exp_is_refused(client: Client) -> None:
    _assert_refused(_get(client, bearer(ALICE, exp=None)))


@pytest.mark.parametrize("sub", ["alice", "42", "", "0190c6a80000700080000000000 0a11c", "urn:uuid:" + str(ALICE)])
def test_a_sub_that_is_not_a_uuid_is_refused(client: Client, sub: str) -> None:
    _assert_refused(_get(client, bearer(sub)))


def test_a_token_without_sub_is_refused(client: Client) -> None:
    _assert_refused(_get(client, bearer(ALICE, sub=None)))


@override_settings(JWT_AUDIENCE="jia-payments")
def test_a_wrong_audience_is_refused(client: Client) -> None:
    _assert_refused(_get(client, bearer(ALICE, aud="another-service")))


@override_settings(JWT_AUDIENCE="jia-payments")
def test_a_missing_audience_is_refused_when_one_is_configured(client: Client) -> None:
    _assert_refused(_get(client, bearer(ALICE, aud=None)))


@override_settings(JWT_ISSUER="https://id.jia.example/")
def test_a_wrong_issuer_is_refused(client: Client) -> None:
    _assert_refused(_get(client, bearer(ALICE, iss="https://evil.example/")))


@override_settings(JWT_ISSUER="https://id.jia.example/")
def test_a_missing_issuer_is_refused_when_one_is_configured(client: Client) -> None:
    _assert_refused(_get(client, bearer(ALICE, iss=None)))


# --- refused: the header ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer a b",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer " + "e30." * 3,
        "Bearer \u00e9t\u00e9.x.y",
        "Bearer " + "a" * 9000,
    ],
)
def test_a_malformed_authorization_header_is_refused(client: Client, authorization: str) -> None:
    _assert_refused(_get(client, authorization))


def test_no_token_at_all_is_401_on_an_authenticated_endpoint(client: Client) -> None:
    response = client.get(ME)

    _assert_refused(response)


def test_another_scheme_is_not_authentication(client: Client) -> None:
    _assert_refused(_get(client, "Basic YWxpY2U6c2VjcmV0"))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + _forged({"alg": "none"}, _claims()),
        "Bearer " + token(ALICE, key="another-key-of-enough-length-0123456789abcdef"),
        "Bearer garbage",
        "Bearer",
    ],
)
def test_a_bad_token_is_refused_even_on_a_public_endpoint(client: Client, authorization: str) -> None:
    response = _get(client, authorization, path="/api/v1/test/public")

    _assert_refused(response, view="public")


def test_a_public_endpoint_serves_anonymous_callers(client: Client) -> None:
    response = client.get("/api/v1/test/public")

    assert response.status_code == 200
    assert CALLS["public"] == 1


# --- keys from settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "short-key"])
def test_an_empty_or_short_hmac_key_refuses_every_token(client: Client, key: str) -> None:
    with override_settings(JWT_SIGNING_KEY=key):
        forged = _forged({"alg": "HS256", "typ": "JWT"}, _claims(), hmac_key=key.encode())
        _assert_refused(_get(client, f"Bearer {forged}"))


def test_an_unknown_algorithm_setting_refuses_every_token(client: Client) -> None:
    with override_settings(JWT_ALGORITHM="none"):
        _assert_refused(_get(client, f"Bearer {_forged({'alg': 'none'}, _claims())}"))


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    ("algorithm", "private_key"),
    [
        ("RS256", RSA_KEY),
        ("RS384", RSA_KEY),
        ("RS512", RSA_KEY),
        ("ES256", EC_KEY),
        ("ES384", EC384_KEY),
        ("EdDSA", ED_KEY),
    ],
)
def test_asymmetric_algorithms_verify_with_the_configured_public_key(
    client: Client, algorithm: str, private_key: Any
) -> None:
    with override_settings(JWT_ALGORITHM=algorithm, JWT_SIGNING_KEY="", JWT_VERIFYING_KEY=public_pem(private_key)):
        response = _get(client, f"Bearer {token(ALICE, key=private_key, algorithm=algorithm)}")

    assert response.status_code == 200


def test_a_public_jwk_is_accepted_as_the_verifying_key(client: Client) -> None:
    jwk = json.dumps(public_jwk(EC_KEY, kid="k1", alg="ES256"))
    with override_settings(JWT_ALGORITHM="ES256", JWT_SIGNING_KEY="", JWT_VERIFYING_KEY=jwk):
        response = _get(client, f"Bearer {token(ALICE, key=EC_KEY, algorithm='ES256')}")

    assert response.status_code == 200


@override_settings(JWT_ALGORITHM="RS256", JWT_SIGNING_KEY="", JWT_VERIFYING_KEY=public_pem(RSA_KEY))
def test_hs256_signed_with_the_rsa_public_key_is_refused(client: Client) -> None:
    # The classic algorithm confusion: the public key (known to anyone) used as an HMAC secret.
    forged = _forged({"alg": "HS256", "typ": "JWT"}, _claims(), hmac_key=public_pem(RSA_KEY).encode())

    _assert_refused(_get(client, f"Bearer {forged}"))


@override_settings(JWT_ALGORITHM="HS256", JWT_SIGNING_KEY=public_pem(RSA_KEY))
def test_a_public_key_configured_as_the_hmac_secret_refuses_every_token(client: Client) -> None:
    forged = _forged({"alg": "HS256", "typ": "JWT"}, _claims(), hmac_key=public_pem(RSA_KEY).encode())

    _assert_refused(_get(client, f"Bearer {forged}"))


@override_settings(JWT_ALGORITHM="RS256", JWT_SIGNING_KEY="", JWT_VERIFYING_KEY=public_pem(RSA_KEY))
def test_a_token_signed_with_another_rsa_key_is_refused(client: Client) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    _assert_refused(_get(client, f"Bearer {token(ALICE, key=other, algorithm='RS256')}"))


@override_settings(JWT_ALGORITHM="ES256", JWT_SIGNING_KEY="", JWT_VERIFYING_KEY=public_pem(RSA_KEY))
def test_a_verifying_key_of_the_wrong_family_refuses_every_token(client: Client) -> None:
    _assert_refused(_get(client, f"Bearer {token(ALICE, key=EC_KEY, algorithm='ES256')}"))


# --- keys from a JWKS URL ---------------------------------------------------------------------------


def _jwks_settings(server: JwksServer, **extra: Any) -> Any:
    return override_settings(
        JWT_ALGORITHM="RS256",
        JWT_SIGNING_KEY="",
        JWT_VERIFYING_KEY="",
        JWT_JWKS_URL=server.url,
        JWT_JWKS_REFRESH_COOLDOWN_SECONDS=0,
        **extra,
    )


def test_jwks_keys_are_fetched_once_and_cached(client: Client) -> None:
    with JwksServer([public_jwk(RSA_KEY, kid="k1")]) as server, _jwks_settings(server):
        for _ in range(3):
            response = _get(client, f"Bearer {token(ALICE, key=RSA_KEY, algorithm='RS256', headers={'kid': 'k1'})}")
            assert response.status_code == 200

    assert server.fetches == 1


def test_an_unknown_kid_refreshes_the_key_set_so_a_rotated_key_is_accepted(client: Client) -> None:
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with JwksServer([public_jwk(RSA_KEY, kid="old")]) as server, _jwks_settings(server):
        assert (
            _get(client, f"Bearer {token(ALICE, key=RSA_KEY, algorithm='RS256', headers={'kid': 'old'})}").status_code
            == 200
        )
        server.keys.append(public_jwk(new_key, kid="new"))  # the identity provider rotates

        response = _get(client, f"Bearer {token(ALICE, key=new_key, algorithm='RS256', headers={'kid': 'new'})}")

    assert response.status_code == 200
    assert server.fetches == 2


def test_unknown_kids_refetch_at_most_once_per_cooldown(client: Client) -> None:
    with (
        JwksServer([public_jwk(RSA_KEY, kid="k1")]) as server,
        _jwks_settings(server),
        override_settings(JWT_JWKS_REFRESH_COOLDOWN_SECONDS=300),
    ):
        for attempt in range(5):
            forged = token(ALICE, key=RSA_KEY, algorithm="RS256", headers={"kid": f"nope-{attempt}"})
            _assert_refused(_get(client, f"Bearer {forged}"))

    assert server.fetches == 1  # the first fetch starts the cooldown; no storm of refetches


def test_a_jwks_token_without_kid_is_refused(client: Client) -> None:
    with JwksServer([public_jwk(RSA_KEY, kid="k1")]) as server, _jwks_settings(server):
        _assert_refused(_get(client, f"Bearer {token(ALICE, key=RSA_KEY, algorithm='RS256')}"))


def test_a_jwks_key_published_for_another_algorithm_is_refused(client: Client) -> None:
    with JwksServer([public_jwk(EC_KEY, kid="ec", alg="ES256")]) as server, _jwks_settings(server):
        _assert_refused(_get(client, f"Bearer {token(ALICE, key=EC_KEY, algorithm='ES256', headers={'kid': 'ec'})}"))


def test_hs256_signed_with_a_jwks_public_key_is_refused(client: Client) -> None:
    with JwksServer([public_jwk(RSA_KEY, kid="k1")]) as server, _jwks_settings(server):
        forged = _forged({"alg": "HS256", "kid": "k1"}, _claims(), hmac_key=public_pem(RSA_KEY).encode())
        _assert_refused(_get(client, f"Bearer {forged}"))


def test_an_unreachable_jwks_url_without_any_key_set_yet_is_a_503_to_retry(client: Client) -> None:
    with override_settings(
        JWT_ALGORITHM="RS256",
        JWT_SIGNING_KEY="",
        JWT_JWKS_URL=f"http://127.0.0.1:{closed_port()}/jwks.json",
        JWT_JWKS_TIMEOUT_SECONDS=1,
    ):
        response = _get(client, f"Bearer {token(ALICE, key=RSA_KEY, algorithm='RS256', headers={'kid': 'k'})}")

    # the token may be good: the client should retry, not sign in again (see payments_project/jwks.py)
    assert response.status_code == 503
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"].endswith(":identity_keys_unavailable")
    assert int(response["Retry-After"]) >= 1
    assert CALLS["me"] == 0


def test_a_jku_header_is_never_followed(client: Client) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with (
        JwksServer([public_jwk(RSA_KEY, kid="k1")]) as ours,
        JwksServer([public_jwk(attacker, kid="k1")]) as theirs,
        _jwks_settings(ours),
    ):
        forged = token(ALICE, key=attacker, algorithm="RS256", headers={"kid": "k1", "jku": theirs.url})
        _assert_refused(_get(client, f"Bearer {forged}"))

    assert theirs.fetches == 0


# --- the API's default: authenticated --------------------------------------------------------------


def _api_views() -> Iterator[tuple[str, Any]]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    yield from (
        (route, view)
        for route, view in walk(get_resolver("payments_project.urls").url_patterns, "")
        if route.startswith("api/v1/")
    )


def test_only_the_plan_list_is_public_in_the_client_api() -> None:
    public = []
    for route, view in _api_views():
        view_class = getattr(view, "cls", None)
        if view_class is None:
            public.append(route)  # a plain Django view under /api/v1/ would skip DRF authentication
            continue
        permissions = view_class.permission_classes
        if not permissions or any(permission is AllowAny for permission in permissions):
            public.append(route)

    assert set(public) <= {"api/v1/plans"}, public


def test_the_plan_list_is_public_for_reading_only() -> None:
    for route, view in _api_views():
        if route == "api/v1/plans":
            assert not {"post", "put", "patch", "delete"} & set(dir(view.cls)), "the plan list must be read-only"


def test_the_openapi_schema_names_both_authentication_schemes() -> None:
    schema = SchemaGenerator(urlconf="tests.payments_project.auth_views").get_schema(request=None, public=True)

    schemes = schema["components"]["securitySchemes"]
    assert schemes["jwtAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["spiffeMutualTLS"]["type"] == "mutualTLS"


def test_the_default_permission_is_authenticated() -> None:
    assert settings.REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"] == ["rest_framework.permissions.IsAuthenticated"]
    assert settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] == ["payments_project.auth.JWTAuthentication"]


# --- mint_token -------------------------------------------------------------------------------------


def test_mint_token_prints_a_token_the_api_accepts(client: Client) -> None:
    out = io.StringIO()
    call_command("mint_token", "--user", str(ALICE), "--email", "alice@example.com", "--ttl", "60", stdout=out)

    response = _get(client, f"Bearer {out.getvalue().strip()}")

    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"
    assert jwt.decode(out.getvalue().strip(), options={"verify_signature": False})["exp"] <= time.time() + 61


def test_mint_token_refuses_in_production() -> None:
    with override_settings(DJANGO_ENV="production"), pytest.raises(CommandError, match="production"):
        call_command("mint_token", "--user", str(ALICE))


def test_mint_token_refuses_without_a_signing_key() -> None:
    with override_settings(JWT_SIGNING_KEY=""), pytest.raises(CommandError, match="JWT_SIGNING_KEY"):
        call_command("mint_token", "--user", str(ALICE))


def test_mint_token_refuses_an_asymmetric_algorithm() -> None:
    with override_settings(JWT_ALGORITHM="RS256"), pytest.raises(CommandError, match="RS256"):
        call_command("mint_token", "--user", str(ALICE))


def test_mint_token_requires_a_uuid_user() -> None:
    with pytest.raises(CommandError):
        call_command("mint_token", "--user", "alice")
