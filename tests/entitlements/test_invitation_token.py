"""Invitation tokens travel in the request body (`POST /api/v1/family/invitations/accept {"token"}`); the old
`…/invitations/{token}/accept` still answers during its deprecation period, and no log line, trace or Sentry
event ever holds a token."""

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from django.test import Client

from entitlements.models import FamilyMembership
from payments_project.tracing import scrub_attributes
from payments_project.url_secrets import redact_path
from tests.deploy.test_entrypoint import entrypoint, fake_bin  # noqa: F401 - fake_bin is a fixture
from tests.entitlements.conftest import as_user
from tests.entitlements.test_family import BOB_EMAIL, Family, problem
from tests.payments_project.test_sentry import RecordingTransport, sentry  # noqa: F401 - a fixture
from tests.support.auth import bearer
from tests.support.otlp import Traced
from tests.support.processes import background_process
from tests.support.proxy import free_port
from tests.support.worker import worker_env

pytestmark = pytest.mark.django_db(transaction=True)

ACCEPT = "/api/v1/family/invitations/accept"


@pytest.fixture
def family(client: Client) -> Family:
    family = Family(client, seats=2)
    assert family.create().status_code == 201
    return family


def test_an_invited_user_joins_with_the_token_in_the_body(client: Client, family: Family) -> None:
    bob = uuid.uuid4()
    token = family.token_for(BOB_EMAIL)

    response = client.post(ACCEPT, {"token": token}, content_type="application/json", **as_user(bob, BOB_EMAIL))

    assert response.status_code == 200, response.content
    assert "Deprecation" not in response
    assert FamilyMembership.objects.filter(user_id=bob, group__owner_user_id=family.owner).exists()


@pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": ["x"]}, {"token": "x" * 129}])
def test_a_missing_or_malformed_token_is_a_400(client: Client, family: Family, body: dict[str, Any]) -> None:
    response = client.post(ACCEPT, body, content_type="application/json", **as_user(uuid.uuid4(), BOB_EMAIL))

    problem(response, 400, "validation_error")
    assert FamilyMembership.objects.count() == 1  # the owner


def test_the_old_path_still_works_and_says_it_is_deprecated(client: Client, family: Family) -> None:
    bob = uuid.uuid4()
    token = family.token_for(BOB_EMAIL)

    response = client.post(f"/api/v1/family/invitations/{token}/accept", **as_user(bob, BOB_EMAIL))

    assert response.status_code == 200
    assert response["Deprecation"].startswith("@")
    assert 'rel="successor-version"' in response["Link"] and ACCEPT in response["Link"]
    assert FamilyMembership.objects.filter(user_id=bob).exists()


def test_requests_on_the_old_path_leave_no_token_in_logs_or_traces(
    family: Family, capfd: pytest.CaptureFixture[str], traced: Traced
) -> None:
    token = family.token_for(BOB_EMAIL)
    client = Client()  # its middleware loads now, with tracing on
    capfd.readouterr()

    wrong_user = client.post(f"/api/v1/family/invitations/{token}/accept", **as_user(uuid.uuid4(), "eve@example.com"))
    unknown = client.post("/api/v1/family/invitations/unknown-secret-token-0123/accept", **as_user(uuid.uuid4()))

    assert (wrong_user.status_code, unknown.status_code) == (403, 404)
    logged = capfd.readouterr().err
    assert token not in logged and "unknown-secret-token-0123" not in logged
    spans = traced.spans()
    exported = json.dumps([[span.name, scrub_attributes(span.attributes)] for span in spans], default=str)
    assert "invitations/{token}/accept" in exported or "<str:token>" in exported
    assert token not in exported and "unknown-secret-token-0123" not in exported


def test_sentry_events_and_breadcrumbs_lose_the_token(sentry: RecordingTransport) -> None:  # noqa: F811
    path = "/api/v1/family/invitations/s3cret-T0ken_x/accept"
    sentry_sdk.add_breadcrumb(category="django.request", message=f"Forbidden: {path}", data={"url": path})
    sentry_sdk.get_current_scope().set_transaction_name(path)

    sentry_sdk.capture_message(f"refused {path}")

    sent = sentry.sent()
    assert "/family/invitations/{token}/accept" in sent
    assert "s3cret-T0ken_x" not in sent
    assert redact_path(f"POST {path}?x=1") == "POST /api/v1/family/invitations/{token}/accept?x=1"
    assert redact_path(ACCEPT) == ACCEPT


@pytest.mark.slow
def test_gunicorn_access_log_holds_no_token(fake_bin: Path) -> None:  # noqa: F811
    argv = entrypoint(fake_bin, "web")["argv"]
    port = free_port()
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    argv[argv.index("--workers") + 1] = "1"
    name = f"gunicorn-invitation-{port}"
    secret = "gunicorn-secret-token-0123456789"

    def call(path: str, method: str = "GET") -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", method=method, headers={"Authorization": bearer(uuid.uuid4())}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    with background_process(
        [sys.executable, "-m", *argv],
        name=name,
        ready=lambda: call("/healthz") == 200,
        env={**worker_env(), "LOG_LEVEL": "INFO"},
    ):
        assert call(f"/api/v1/family/invitations/{secret}/accept", "POST") == 404
        time.sleep(0.5)

    text = Path(f"/tmp/{name}.log").read_text()
    assert "/api/v1/family/invitations/{token}/accept" in text  # the access line is there, redacted
    assert secret not in text
