"""A verified XFCC header is remembered per process (by sha256) until its first certificate expires and
for at most XFCC_VERIFIED_MAX_SECONDS, so a bundle that drops a CA is obeyed within that time."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import time_machine
from django.test import Client, override_settings

from payments_project import service_auth
from tests.support.auth import SpiffePki

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.payments_project.auth_views")]

WHOAMI = "/internal/v1/whoami"
CATALOG = "spiffe://jia.test/ns/catalog/sa/catalog"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return tmp_path / "bundle.pem"


@pytest.fixture(autouse=True)
def _xfcc_mode(bundle: Path) -> Iterator[None]:
    with override_settings(SERVICE_AUTH_MODE="xfcc", SPIFFE_TRUST_BUNDLE=str(bundle), SPIFFE_TRUST_DOMAIN="jia.test"):
        service_auth._verified_xfcc.clear()
        yield
    service_auth._verified_xfcc.clear()


def _whoami(client: Client, header: str) -> int:
    return client.get(WHOAMI, HTTP_X_FORWARDED_CLIENT_CERT=header).status_code


def test_a_repeated_header_is_verified_once(client: Client, bundle: Path) -> None:
    pki = SpiffePki("jia.test")
    bundle.write_text(pki.bundle_pem())
    header = pki.xfcc(pki.leaf(CATALOG))

    assert [_whoami(client, header) for _ in range(3)] == [200, 200, 200]
    assert len(service_auth._verified_xfcc) == 1


def test_a_remembered_certificate_is_refused_once_it_expires(client: Client, bundle: Path) -> None:
    pki = SpiffePki("jia.test")
    bundle.write_text(pki.bundle_pem())
    header = pki.xfcc(pki.leaf(CATALOG))  # valid for the next hour
    assert _whoami(client, header) == 200

    with time_machine.travel(time.time() + 2 * 3600, tick=False):
        assert _whoami(client, header) == 401


def test_a_ca_dropped_from_the_bundle_is_obeyed_within_the_memory_s_limit(client: Client, bundle: Path) -> None:
    old, new = SpiffePki("jia.test"), SpiffePki("jia.test")
    bundle.write_text(old.bundle_pem() + new.bundle_pem())
    header = old.xfcc(old.leaf(CATALOG))
    assert _whoami(client, header) == 200

    bundle.write_text(new.bundle_pem())  # SPIRE retires the old CA

    with time_machine.travel(time.time() + service_auth.XFCC_VERIFIED_MAX_SECONDS + 1, tick=False):
        assert _whoami(client, header) == 401
