"""What Sentry would receive, recorded by a transport of the SDK's own: errors and traces, never personal data."""

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.transport import Transport

from billing.models import Price
from payments_project.logging import sentry_init
from payments_project.schedule import BEAT_SCHEDULE
from payments_project.wsgi import application
from tests.billing.checkout.support import SESSIONS, URL
from tests.billing.factories import PriceFactory
from tests.payments_project.test_hot_path_wsgi import REQUEST_ID, answered_alike, environ
from tests.support.auth import token
from tests.support.stripe_events import signed, stripe_event
from tests.support.stripe_fake import StripeFake
from webhooks.models import WebhookEvent
from webhooks.tasks import webhook_event_process_task

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE = "1.4.3"
EMAIL = "alice.liddell@example.com"
NAME = "Alice Liddell"
ADDRESS = {
    "line1": "12 Rabbit Hole Lane",
    "line2": "Flat 3",
    "city": "Oxford",
    "postal_code": "OX1 1AA",
    "country": "GB",
}
PHONE = "+44 1865 555 0199"
PERSONAL = [EMAIL, NAME, PHONE, *(v for k, v in ADDRESS.items() if k != "country"), "Liddell", "Rabbit Hole"]


class RecordingTransport(Transport):
    """Keeps every envelope the SDK would send."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def items(self, kind: str) -> list[dict[str, Any]]:
        sentry_sdk.flush()
        return [item.payload.json for e in self.envelopes for item in e.items if item.type == kind]  # type: ignore[misc]

    def sent(self) -> str:
        sentry_sdk.flush()
        return b"".join(envelope.serialize() for envelope in self.envelopes).decode()


@pytest.fixture
def sentry() -> Iterator[RecordingTransport]:
    transport = RecordingTransport()
    sentry_init(
        "https://public@sentry.invalid/1",
        environment="test",
        release=RELEASE,
        traces_sample_rate=1.0,
        transport=transport,
    )
    yield transport
    # Off again, for the rest of the session: a bare init() would set up its default integrations, Django's
    # among them, and every later hot request would go through Sentry's steps (payments_project.hot_path)
    sentry_sdk.init(default_integrations=False, auto_enabling_integrations=False)


def post(url: str, body: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our live server
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def assert_no_personal_data(sent: str, *secrets: str) -> None:
    for secret in [*PERSONAL, *secrets]:
        assert secret not in sent, secret


def test_a_webhook_whose_handler_fails_reaches_sentry_without_the_customers_data(
    live_server: Any, sentry: RecordingTransport
) -> None:
    # given a customer.updated whose metadata.user_id someone filled with the customer's email in Stripe's dashboard
    customer = {
        "id": f"cus_{uuid.uuid4().hex[:14]}",
        "object": "customer",
        "email": EMAIL,
        "name": NAME,
        "phone": PHONE,
        "address": ADDRESS,
        "shipping": {"name": NAME, "address": ADDRESS, "phone": PHONE},
        "metadata": {"user_id": EMAIL},
    }
    event = stripe_event("customer.updated", customer)
    body = json.dumps(event)
    signature = signed(body)

    # when Stripe delivers it and a worker processes it
    status = post(
        f"{live_server.url}/webhooks/stripe/", body, {"Content-Type": "application/json", "Stripe-Signature": signature}
    )
    stored = WebhookEvent.objects.get(event_id=event["id"])
    webhook_event_process_task.apply(args=(str(stored.id),))

    # then the failure reached Sentry, with its release, and nothing of the customer nor the signature did
    assert status == 200
    stored.refresh_from_db()
    assert stored.status == WebhookEvent.Status.DEAD
    errors = sentry.items("event")
    (error,) = errors
    assert error["exception"]["values"][-1]["type"] == "StripeObjectInvalid"
    assert error["release"] == RELEASE
    transactions = sentry.items("transaction")
    assert "/webhooks/stripe/" in {t["transaction"] for t in transactions}
    assert_no_personal_data(sentry.sent(), signature, signature.split("v1=")[1][:16])


def test_a_checkout_that_stripe_fails_reaches_sentry_without_the_buyers_token_or_email(
    live_server: Any, stripe_fake: StripeFake, sentry: RecordingTransport, settings: Any
) -> None:
    # given Stripe answering 500 to the checkout session
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    price = cast(Price, PriceFactory(stripe_price_id="price_family_month", plan__code="family", unit_amount=1299))
    stripe_fake.fail_next(SESSIONS, 500, {"type": "api_error", "message": "Something went wrong"})
    jwt = token(uuid.uuid4(), email=EMAIL, email_verified=True, name=NAME)  # verified: it goes to Stripe
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}

    # when the buyer checks out
    status = post(
        f"{live_server.url}{URL}",
        json.dumps(body),
        {"Content-Type": "application/json", "Authorization": f"Bearer {jwt}", "Idempotency-Key": "key-1"},
    )

    # then the failed request's trace reached Sentry, with its release, and neither the token nor the email
    assert status == 503
    assert stripe_fake.sent("POST /v1/customers")[0].params["email"] == EMAIL  # Stripe got it; Sentry must not
    (checkout,) = [t for t in sentry.items("transaction") if t["transaction"].endswith("checkout/sessions")]
    assert checkout["release"] == RELEASE
    assert checkout["request"]["headers"]["Authorization"] == "[Filtered]"
    assert_no_personal_data(sentry.sent(), jwt, jwt.split(".")[1][:16])


def test_beats_jobs_of_a_minute_or_more_are_sentry_crons_monitors(sentry: RecordingTransport) -> None:
    celery = sentry_sdk.get_client().get_integration(CeleryIntegration)

    assert celery is not None
    assert celery.monitor_beat_tasks is True
    # Sentry Crons takes whole minutes: the jobs of every 10 or 30 s are watched by the Prometheus alert instead
    assert set(celery.exclude_beat_tasks or []) == {
        "outbox-dispatch",
        "outbox-measure",
        "webhooks-sweep",
        "gdpr-audit-seal",
    }
    assert "reconciliation-state-compare" in BEAT_SCHEDULE


def test_an_entitlement_check_answered_before_djangos_handler_reaches_sentry_as_djangos_handler_sends_it(
    sentry: RecordingTransport,
) -> None:
    # given a client's token that carries its owner's email and name
    jwt = token(uuid.uuid4(), email=EMAIL, email_verified=True, name=NAME)

    def check() -> dict[str, Any]:
        return environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION=f"Bearer {jwt}")

    # when the WSGI application answers it on its fast path, Sentry on, and Django's handler too; and a
    # refused token likewise
    assert application.enabled
    answer = answered_alike(check)
    refused = answered_alike(lambda: environ("GET", "/api/v1/entitlements/hd", HTTP_AUTHORIZATION="Bearer not.a.jwt"))

    # then the same answers (asserted), and a transaction reached Sentry for each request: its route, the
    # request's method and allowed headers, and neither the token nor the email nor the name
    assert (answer[0], refused[0]) == (200, 401)
    transactions = [t for t in sentry.items("transaction") if t["transaction"] == "/api/v1/entitlements/{feature_key}"]
    assert len(transactions) == 4
    for transaction in transactions:
        assert transaction["release"] == RELEASE
        assert transaction["request"]["method"] == "GET"
        assert transaction["request"]["url"].endswith("/api/v1/entitlements/hd")
        assert transaction["request"]["headers"]["Authorization"] == "[Filtered]"
        assert transaction["request"]["headers"]["X-Request-Id"] == REQUEST_ID
    assert_no_personal_data(sentry.sent(), jwt, jwt.split(".")[1][:16])
