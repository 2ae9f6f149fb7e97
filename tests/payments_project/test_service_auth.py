"""Service identity for /internal/: SPIFFE certificates forwarded by the sidecar in XFCC."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from payments_project.service_auth import parse_xfcc, spiffe_trust_domain
from payments_project.settings.base import service_allowlist_from_env
from tests.payments_project.auth_views import CALLS
from tests.support.auth import SpiffePki, bearer, xfcc

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.payments_project.auth_views")]

PROBLEM = "application/problem+json"
ENTITLEMENTS = "/internal/v1/test/entitlements"
WHOAMI = "/internal/v1/whoami"
BILLING_UI = "spiffe://jia.test/ns/web/sa/billing-ui"
CATALOG = "spiffe://jia.test/ns/catalog/sa/catalog"


@pytest.fixture(scope="module")
def pki() -> SpiffePki:
    return SpiffePki("jia.test")


@pytest.fixture(autouse=True)
def _xfcc_mode(pki: SpiffePki, tmp_path: Path) -> Iterator[None]:
    CALLS.clear()
    with override_settings(
        SERVICE_AUTH_MODE="xfcc",
        SPIFFE_TRUST_BUNDLE=str(pki.write_bundle(tmp_path)),
        SPIFFE_TRUST_DOMAIN="jia.test",
        SERVICE_ALLOWLIST={"entitlements.read": [BILLING_UI]},
    ):
        yield


def _get(client: Client, header: str | None, path: str = ENTITLEMENTS, **extra: Any) -> Any:
    if header is not None:
        extra["HTTP_X_FORWARDED_CLIENT_CERT"] = header
    return client.get(path, **extra)


def _assert_status(response: Any, status: int) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    assert response.json()["status"] == status
    assert CALLS["internal"] == 0


# --- let through ------------------------------------------------------------------------------


def test_a_valid_svid_on_the_allow_list_is_let_through(client: Client, pki: SpiffePki) -> None:
    response = _get(client, pki.xfcc(pki.leaf(BILLING_UI)))

    assert response.status_code == 200
    assert response.json() == {"caller": BILLING_UI}
    assert CALLS["internal"] == 1


def test_whoami_answers_any_verified_service_of_the_trust_domain(client: Client, pki: SpiffePki) -> None:
    response = _get(client, pki.xfcc(pki.leaf(CATALOG)), path=WHOAMI)

    assert response.status_code == 200
    assert response.json() == {"spiffe_id": CATALOG, "trust_domain": "jia.test"}


def test_the_id_comes_from_the_certificate_not_from_the_uri_field(client: Client, pki: SpiffePki) -> None:
    header = pki.xfcc(pki.leaf(CATALOG), uri=BILLING_UI)  # URI= claims the allowed id; the cert says catalog

    _assert_status(_get(client, header), 403)


def test_the_last_xfcc_element_is_the_sidecars(client: Client, pki: SpiffePki) -> None:
    injected = xfcc(None, uri=BILLING_UI)
    header = f"{injected},{pki.xfcc(pki.leaf(BILLING_UI))}"

    assert _get(client, header).status_code == 200


def test_the_trust_bundle_is_reread_when_it_rotates(client: Client, pki: SpiffePki, tmp_path: Path) -> None:
    new_pki = SpiffePki("jia.test")
    bundle = tmp_path / "rotating.pem"
    bundle.write_text(pki.bundle_pem())
    with override_settings(SPIFFE_TRUST_BUNDLE=str(bundle)):
        assert _get(client, pki.xfcc(pki.leaf(BILLING_UI))).status_code == 200
        bundle.write_text(pki.bundle_pem() + new_pki.bundle_pem())  # SPIRE adds the next CA

        response = _get(client, new_pki.xfcc(new_pki.leaf(BILLING_UI)))

    assert response.status_code == 200


# --- 401: no verified identity ---------------------------------------------------------------------


def test_no_header_is_401(client: Client) -> None:
    response = _get(client, None)

    _assert_status(response, 401)
    assert response["WWW-Authenticate"]


def test_an_expired_certificate_is_401(client: Client, pki: SpiffePki) -> None:
    _assert_status(_get(client, pki.xfcc(pki.leaf(BILLING_UI, expired=True))), 401)


def test_a_certificate_from_a_foreign_ca_is_401(client: Client) -> None:
    foreign = SpiffePki("jia.test")  # same trust domain name, another CA

    _assert_status(_get(client, foreign.xfcc(foreign.leaf(BILLING_UI))), 401)


def test_a_missing_intermediate_is_401(client: Client, pki: SpiffePki) -> None:
    _assert_status(_get(client, pki.xfcc(pki.leaf(BILLING_UI), with_chain=False)), 401)


def test_a_leaf_signed_directly_by_a_foreign_key_claiming_our_issuer_is_401(client: Client, pki: SpiffePki) -> None:
    impostor = SpiffePki("jia.test")
    leaf = impostor.leaf(BILLING_UI, issuer=impostor.intermediate)

    _assert_status(_get(client, xfcc(leaf, chain=[leaf, pki.intermediate])), 401)


def test_a_server_only_certificate_is_401(client: Client, pki: SpiffePki) -> None:
    _assert_status(_get(client, pki.xfcc(pki.leaf(BILLING_UI, client_auth=False))), 401)


def test_a_uri_without_a_cert_is_a_spoof_and_401(client: Client) -> None:
    _assert_status(_get(client, f"By=spiffe://jia.test/ns/payments/sa/payments;URI={BILLING_UI}"), 401)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        'Cert="not a certificate"',
        'Cert="-----BEGIN%20CERTIFICATE-----%0Azzzz%0A-----END%20CERTIFICATE-----"',
        'Cert="unterminated',
        ";;;",
        "=",
        "x" * 40000,
    ],
)
def test_a_garbage_header_is_401(client: Client, header: str) -> None:
    _assert_status(_get(client, header), 401)


def test_a_certificate_without_a_spiffe_id_is_401(client: Client, pki: SpiffePki) -> None:
    _assert_status(_get(client, pki.xfcc(pki.leaf("https://jia.test/not-spiffe"))), 401)


# --- 403: verified, but not allowed ------------------------------------------------------------------


def test_an_unlisted_id_is_403(client: Client, pki: SpiffePki) -> None:
    _assert_status(_get(client, pki.xfcc(pki.leaf(CATALOG))), 403)


def test_a_wrong_trust_domain_is_403(client: Client, pki: SpiffePki) -> None:
    other_domain_id = "spiffe://partner.example/ns/web/sa/billing-ui"
    with override_settings(SERVICE_ALLOWLIST={"entitlements.read": [other_domain_id]}):
        _assert_status(_get(client, pki.xfcc(pki.leaf(other_domain_id))), 403)


def test_each_endpoint_has_its_own_allow_list(client: Client, pki: SpiffePki) -> None:
    with override_settings(SERVICE_ALLOWLIST={"entitlements.read": [CATALOG]}):
        assert _get(client, pki.xfcc(pki.leaf(CATALOG))).status_code == 200
        CALLS.clear()
        _assert_status(_get(client, pki.xfcc(pki.leaf(BILLING_UI))), 403)


def test_a_view_without_a_scope_is_a_configuration_error(client: Client, pki: SpiffePki) -> None:
    with pytest.raises(ImproperlyConfigured):
        _get(client, pki.xfcc(pki.leaf(BILLING_UI)), path="/internal/v1/test/unscoped")


@pytest.mark.parametrize("mode", ["none", "", "mtls", "XFCC"])
def test_internal_is_closed_in_any_other_mode(client: Client, pki: SpiffePki, mode: str) -> None:
    with override_settings(SERVICE_AUTH_MODE=mode):
        _assert_status(_get(client, pki.xfcc(pki.leaf(BILLING_UI))), 403)
        _assert_status(_get(client, None, path=WHOAMI), 403)


def test_a_client_jwt_is_no_service_identity(client: Client) -> None:
    _assert_status(_get(client, None, HTTP_AUTHORIZATION=bearer(uuid.uuid4())), 401)


def test_an_unreadable_trust_bundle_is_503(client: Client, pki: SpiffePki, tmp_path: Path) -> None:
    with override_settings(SPIFFE_TRUST_BUNDLE=str(tmp_path / "missing.pem")):
        _assert_status(_get(client, pki.xfcc(pki.leaf(BILLING_UI))), 503)


# --- parsing and configuration -------------------------------------------------------------------


def test_xfcc_parsing_follows_envoys_quoting() -> None:
    header = 'By=spiffe://a/b;Hash=ab;Subject="CN=x,O=y;z";URI=spiffe://a/c,By=spiffe://a/d;URI=spiffe://a/e'

    elements = parse_xfcc(header)

    assert elements == [
        {"by": "spiffe://a/b", "hash": "ab", "subject": "CN=x,O=y;z", "uri": "spiffe://a/c"},
        {"by": "spiffe://a/d", "uri": "spiffe://a/e"},
    ]


@pytest.mark.parametrize(
    ("spiffe_id", "domain"),
    [
        ("spiffe://jia.test/ns/a/sa/b", "jia.test"),
        ("spiffe://jia.test", None),
        ("spiffe://jia.test/", None),
        ("spiffe://JIA.test/x", None),
        ("spiffe://user@jia.test/x", None),
        ("spiffe://jia.test:443/x", None),
        ("spiffe://jia.test/x?y=1", None),
        ("spiffe://jia.test/a/../b", None),
        ("https://jia.test/x", None),
    ],
)
def test_spiffe_ids_are_validated(spiffe_id: str, domain: str | None) -> None:
    assert spiffe_trust_domain(spiffe_id) == domain


def test_the_allow_list_comes_from_json_and_per_scope_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_ALLOWLIST", json.dumps({"entitlements.read": [CATALOG], "other.scope": [CATALOG]}))
    monkeypatch.setenv("SERVICE_ALLOWLIST_ENTITLEMENTS_READ", f"{BILLING_UI},{CATALOG}")

    allowlist = service_allowlist_from_env(("entitlements.read",))

    assert allowlist == {"entitlements.read": [BILLING_UI, CATALOG], "other.scope": [CATALOG]}


@pytest.mark.parametrize("raw", ["not json", "[]", '{"a": "spiffe://x/y"}', '{"a": ["https://x/y"]}'])
def test_a_malformed_allow_list_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SERVICE_ALLOWLIST", raw)

    with pytest.raises(ImproperlyConfigured):
        service_allowlist_from_env(())
