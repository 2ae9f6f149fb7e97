"""X-Forwarded-Client-Cert is believed only from the sidecar (issue #13, point 4): certificates are public, so
a copied SVID sent straight to port 8000 — or relayed by someone else's proxy — proves nothing."""

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from payments_project.settings.guard import production_problems
from payments_project.settings.parsing import networks_from_env
from tests.payments_project.test_settings_guard import SECURE
from tests.support.auth import SpiffePki

pytestmark = pytest.mark.django_db

WHOAMI = "/internal/v1/whoami"
CALLER = "spiffe://jia.test/ns/billing/sa/billing"
OURS = "spiffe://jia.test/ns/payments/sa/payments"  # what tests/support/auth.xfcc writes in By=
POD_NEIGHBOUR = "10.42.0.9"  # anyone in the cluster who can reach the pod's port 8000


@pytest.fixture(scope="module")
def pki() -> SpiffePki:
    return SpiffePki("jia.test")


@pytest.fixture(autouse=True)
def _xfcc_mode(pki: SpiffePki, tmp_path: Path) -> Iterator[None]:
    with override_settings(
        SERVICE_AUTH_MODE="xfcc",
        SPIFFE_TRUST_BUNDLE=str(pki.write_bundle(tmp_path)),
        SPIFFE_TRUST_DOMAIN="jia.test",
        SERVICE_SPIFFE_ID=OURS,
    ):
        yield


def _whoami(client: Client, header: str, *, peer: str = "127.0.0.1") -> Any:
    return client.get(WHOAMI, HTTP_X_FORWARDED_CLIENT_CERT=header, REMOTE_ADDR=peer)


# --- who may send the header ------------------------------------------------------------------------------------


def test_a_valid_certificate_from_the_sidecar_on_loopback_is_believed(client: Client, pki: SpiffePki) -> None:
    response = _whoami(client, pki.xfcc(pki.leaf(CALLER)))

    assert response.status_code == 200
    assert response.json()["spiffe_id"] == CALLER


def test_a_copied_certificate_sent_past_the_sidecar_is_refused(client: Client, pki: SpiffePki) -> None:
    # given a perfectly valid XFCC header (certificates are public) sent straight to the app's port
    response = _whoami(client, pki.xfcc(pki.leaf(CALLER)), peer=POD_NEIGHBOUR)

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert "sidecar" in response.json()["detail"]


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"])
def test_every_loopback_form_is_the_sidecar_by_default(client: Client, pki: SpiffePki, peer: str) -> None:
    assert _whoami(client, pki.xfcc(pki.leaf(CALLER)), peer=peer).status_code == 200


def test_the_trusted_peers_are_configurable(client: Client, pki: SpiffePki) -> None:
    header = pki.xfcc(pki.leaf(CALLER))
    with override_settings(SERVICE_AUTH_TRUSTED_PEERS=(ipaddress.ip_network("10.42.0.0/24"),)):
        from_the_mesh = _whoami(client, header, peer=POD_NEIGHBOUR)
        from_loopback = _whoami(client, header)

    assert (from_the_mesh.status_code, from_loopback.status_code) == (200, 401)


# --- By=: written by our sidecar, not relayed from another --------------------------------------------------------


def test_an_element_written_by_another_proxy_is_refused(client: Client, pki: SpiffePki) -> None:
    header = pki.xfcc(pki.leaf(CALLER)).replace(f"By={OURS}", "By=spiffe://jia.test/ns/gateway/sa/edge")

    assert _whoami(client, header).status_code == 401


def test_an_element_without_by_is_judged_by_its_certificate(client: Client, pki: SpiffePki) -> None:
    header = pki.xfcc(pki.leaf(CALLER)).replace(f"By={OURS};", "")

    assert _whoami(client, header).status_code == 200


def test_without_our_own_id_configured_no_by_matches(client: Client, pki: SpiffePki) -> None:
    with override_settings(SERVICE_SPIFFE_ID=""):
        assert _whoami(client, pki.xfcc(pki.leaf(CALLER))).status_code == 401


# --- configuration -------------------------------------------------------------------------------------------------


def test_trusted_peers_default_to_loopback_and_parse_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    default = "127.0.0.0/8,::1/128"
    assert [str(n) for n in networks_from_env("SERVICE_AUTH_TRUSTED_PEERS", default)] == ["127.0.0.0/8", "::1/128"]

    monkeypatch.setenv("SERVICE_AUTH_TRUSTED_PEERS", "10.0.0.0/8, fd00::1")
    assert [str(n) for n in networks_from_env("SERVICE_AUTH_TRUSTED_PEERS", default)] == ["10.0.0.0/8", "fd00::1/128"]

    monkeypatch.setenv("SERVICE_AUTH_TRUSTED_PEERS", "10.0.0.0/33")
    with pytest.raises(ImproperlyConfigured, match="SERVICE_AUTH_TRUSTED_PEERS"):
        networks_from_env("SERVICE_AUTH_TRUSTED_PEERS", default)


def test_production_with_the_sidecar_requires_our_own_spiffe_id() -> None:
    sidecar = {
        **SECURE,
        "SERVICE_AUTH_MODE": "xfcc",
        "SPIFFE_TRUST_BUNDLE": "/etc/spiffe/bundle.crt",
        "SPIFFE_TRUST_DOMAIN": "jia.example",
    }

    assert production_problems({**sidecar, "SERVICE_SPIFFE_ID": ""}) == [
        "SERVICE_SPIFFE_ID is empty (required when SERVICE_AUTH_MODE=xfcc: the By= our sidecar writes)"
    ]
    assert production_problems({**sidecar, "SERVICE_SPIFFE_ID": "payments"}) == [
        "SERVICE_SPIFFE_ID must be a spiffe:// ID, not 'payments'"
    ]
    assert production_problems(sidecar) == []  # SECURE names ours
