"""Client IPs behind the ingress (issue #13, point 2): the chart's TRUSTED_PROXY_COUNT gives audit rows and
rate limits the real client, unsigned webhook junk has a budget of its own, and a 401 counts against the
caller's IP like any anonymous request."""

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from gdpr.models import AuditEvent, AuditEventPersonal
from payments_project.settings.guard import production_problems
from tests.deploy.manifests import named, rendered
from tests.payments_project.test_settings_guard import SECURE
from tests.support.auth import bearer
from tests.support.stripe_events import delivery, stripe_event

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
INGRESS_POD = "10.42.3.17"  # what REMOTE_ADDR says behind the ingress: the controller's pod
CLIENT, OTHER_CLIENT = "198.51.100.77", "198.51.100.78"
WEBHOOK = "/webhooks/stripe/"


def chart_trusted_proxy_count() -> int:
    """TRUSTED_PROXY_COUNT as the production example's ConfigMap gives it to every pod."""
    return int(named(rendered("production"), "ConfigMap", "-config")["data"]["TRUSTED_PROXY_COUNT"])


def through_the_ingress(client_ip: str, *, written_by_client: str = "") -> dict[str, str]:
    """What reaches the pod: the ingress appended the address it saw to whatever the client wrote."""
    forwarded = f"{written_by_client}, {client_ip}" if written_by_client else client_ip
    return {"REMOTE_ADDR": INGRESS_POD, "HTTP_X_FORWARDED_FOR": forwarded}


# --- TRUSTED_PROXY_COUNT: set by the chart, required by the guard ---------------------------------------------


def test_production_refuses_to_start_without_an_explicit_trusted_proxy_count() -> None:
    unset = {key: value for key, value in SECURE.items() if key != "TRUSTED_PROXY_COUNT"}

    assert [p for p in production_problems(unset) if "TRUSTED_PROXY_COUNT" in p] == [
        "TRUSTED_PROXY_COUNT is not set (how many proxies in front append to X-Forwarded-For; 0 for none)"
    ]
    assert production_problems({**unset, "TRUSTED_PROXY_COUNT": 0}) == []  # none in front: fine, if said


def test_an_audit_row_written_behind_the_ingress_holds_the_clients_ip(client: Client, settings: Any) -> None:
    # given the production chart's configuration
    settings.TRUSTED_PROXY_COUNT = chart_trusted_proxy_count()
    user = uuid.uuid4()

    # when a client asks for an export through the ingress, having forged an address of its own
    response = client.post(
        "/api/v1/gdpr/exports",
        data="{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=bearer(user),
        **through_the_ingress(CLIENT, written_by_client="203.0.113.250"),
    )

    # then the audit trail names the client, not the ingress and not the forgery
    assert response.status_code == 202, response.content
    event = AuditEvent.objects.get(action="gdpr.export.requested")
    assert AuditEventPersonal.objects.get(event=event).ip == CLIENT


def test_behind_the_ingress_anonymous_clients_get_a_budget_each(client: Client, settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = chart_trusted_proxy_count()
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "api_read": "2/m"}

    answers = [client.get("/api/v1/plans", **through_the_ingress(CLIENT)).status_code for _ in range(3)]
    other = client.get("/api/v1/plans", **through_the_ingress(OTHER_CLIENT))

    assert answers == [200, 200, 429]
    assert other.status_code == 200  # one noisy client behind the same ingress does not lock out the rest


# --- webhooks: rejects apart from accepted deliveries -----------------------------------------------------------


def _junk(client: Client, ip: str) -> Any:
    body = json.dumps(stripe_event("invoice.paid", {"id": "in_x", "object": "invoice"}))
    return client.post(
        WEBHOOK, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1,v1=forged", REMOTE_ADDR=ip
    )


def _signed(client: Client, ip: str) -> Any:
    event = stripe_event("invoice.paid", {"id": f"in_{uuid.uuid4().hex[:12]}", "object": "invoice"})
    return client.post(WEBHOOK, REMOTE_ADDR=ip, **delivery(event))


def test_unsigned_junk_never_spends_the_budget_of_signed_deliveries(client: Client, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "webhook": "3/m", "webhook_rejected": "3/m"}
    shared = "203.0.113.9"  # the worst case: the attacker and Stripe behind one address

    junk = [_junk(client, shared).status_code for _ in range(6)]
    genuine = [_signed(client, shared).status_code for _ in range(4)]

    assert junk == [400, 400, 400, 429, 429, 429]  # the attacker is slowed down...
    assert genuine == [200, 200, 200, 429]  # ...and Stripe still has its whole budget, and only its own


def test_a_flood_of_signed_deliveries_does_not_hide_rejects_from_the_reject_budget(
    client: Client, settings: Any
) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "webhook": "2/m", "webhook_rejected": "2/m"}

    for _ in range(2):
        assert _signed(client, "203.0.113.10").status_code == 200

    assert [_junk(client, "203.0.113.10").status_code for _ in range(3)] == [400, 400, 429]


def test_refused_content_types_count_as_rejects(client: Client, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "webhook": "1/m", "webhook_rejected": "1/m"}

    first = client.post(WEBHOOK, data="x=1", content_type="text/plain", REMOTE_ADDR="203.0.113.11")
    second = client.post(WEBHOOK, data="x=1", content_type="text/plain", REMOTE_ADDR="203.0.113.11")

    assert (first.status_code, second.status_code) == (415, 429)
    assert _signed(client, "203.0.113.11").status_code == 200


# --- 401s count against the caller's IP ----------------------------------------------------------------------


def test_failed_tokens_are_rate_limited_by_ip(client: Client, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "api_read": "3/m"}
    forged = "Bearer " + "e30." * 2 + "forged"

    answers = [
        client.get("/api/v1/subscriptions", HTTP_AUTHORIZATION=forged, REMOTE_ADDR="203.0.113.20").status_code
        for _ in range(5)
    ]
    limited = client.get("/api/v1/subscriptions", HTTP_AUTHORIZATION=forged, REMOTE_ADDR="203.0.113.20")

    assert answers == [401, 401, 401, 429, 429]
    assert limited["Content-Type"] == PROBLEM
    assert 1 <= int(limited["Retry-After"]) <= 60
    # a signed-in user behind the same address has a budget of their own
    assert (
        client.get(
            "/api/v1/subscriptions", HTTP_AUTHORIZATION=bearer(uuid.uuid4()), REMOTE_ADDR="203.0.113.20"
        ).status_code
        == 200
    )


def test_missing_credentials_count_in_the_views_own_group(client: Client, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "2/m"}
    body = json.dumps({"price_id": str(uuid.uuid4()), "success_url": "https://x", "cancel_url": "https://x"})

    answers = [
        client.post(
            "/api/v1/checkout/sessions", data=body, content_type="application/json", REMOTE_ADDR="203.0.113.21"
        ).status_code
        for _ in range(3)
    ]

    assert answers == [401, 401, 429]


def test_refused_service_certificates_are_rate_limited_by_ip_too(client: Client, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "internal": "2/m"}
    settings.SERVICE_AUTH_MODE = "xfcc"
    user = uuid.uuid4()

    answers = [
        client.get(
            f"/internal/v1/users/{user}/entitlements", HTTP_X_FORWARDED_CLIENT_CERT="URI=spiffe://jia.test/x"
        ).status_code
        for _ in range(3)
    ]

    assert answers == [401, 401, 429]
