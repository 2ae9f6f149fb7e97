"""POST /api/v1/billing-portal/sessions: Stripe's customer portal (payment methods, invoices)."""

import uuid
from typing import Any

import pytest
from django.test import Client

from gdpr.models import AuditEvent
from tests.billing.factories import CustomerFactory
from tests.support.auth import bearer
from tests.support.stripe_fake import StripeFake

PROBLEM = "application/problem+json"
ALICE = uuid.uuid4()
RETURN = "https://app.example/account"  # the test settings' CHECKOUT_RETURN_URL_ORIGINS: https://app.example


def portal(api: Client, body: Any, user_id: uuid.UUID | None = ALICE) -> Any:
    auth = {"HTTP_AUTHORIZATION": bearer(user_id)} if user_id else {}
    return api.post("/api/v1/billing-portal/sessions", body, content_type="application/json", **auth)


@pytest.mark.django_db(transaction=True)
def test_a_customer_gets_a_portal_url_for_their_own_stripe_customer(api: Client, stripe_fake: StripeFake) -> None:
    CustomerFactory(user_id=ALICE, stripe_customer_id="cus_alice")
    CustomerFactory(stripe_customer_id="cus_someone_else")

    response = portal(api, {"return_url": RETURN})

    assert response.status_code == 201
    assert response.json()["url"].startswith("https://billing.stripe.com/p/session/")
    [sent] = stripe_fake.sent("POST /v1/billing_portal/sessions")
    assert sent.params == {"customer": "cus_alice", "return_url": RETURN}
    assert sent.idempotency_key
    assert AuditEvent.objects.filter(action="billing_portal.opened").count() == 1


@pytest.mark.django_db(transaction=True)
def test_without_a_stripe_customer_there_is_nothing_to_manage_409(api: Client, stripe_fake: StripeFake) -> None:
    CustomerFactory(user_id=ALICE, stripe_customer_id=None)

    response = portal(api, {"return_url": RETURN})

    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"].endswith(":no_billing_account")
    assert stripe_fake.sent("POST /v1/billing_portal/sessions") == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"return_url": "not a url"},
        {"return_url": "javascript:alert(1)"},
        {"return_url": "https://evil.example/account"},  # an unlisted origin
        {"return_url": "https://app.example.evil.example/account"},
        {"return_url": "https://app.example@evil.example/account"},
    ],
)
def test_a_bad_return_url_is_a_400_and_no_session(api: Client, stripe_fake: StripeFake, body: Any) -> None:
    CustomerFactory(user_id=ALICE, stripe_customer_id="cus_alice")

    response = portal(api, body)

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["errors"][0]["field"] == "return_url"
    assert stripe_fake.sent("POST /v1/billing_portal/sessions") == []


@pytest.mark.django_db
def test_the_portal_needs_a_token(api: Client) -> None:
    response = portal(api, {"return_url": RETURN}, user_id=None)

    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM
