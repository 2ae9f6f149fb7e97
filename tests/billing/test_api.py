"""The client endpoints for subscriptions, payments and invoices (alice owns, bob is another user)."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing import gateway, services
from billing.models import Invoice, Subscription
from gdpr.models import AuditEvent
from gdpr.registry import pseudonym_for
from tasks.models import OutboxMessage
from tests.billing.factories import (
    CustomerFactory,
    InvoiceFactory,
    PaymentFactory,
    PriceFactory,
    SubscriptionFactory,
)
from tests.support.auth import bearer
from tests.support.stripe_fake import StripeFake
from tests.support.stripe_setup import customer_with_card, subscription_for

PROBLEM = "application/problem+json"
ALICE, BOB = uuid.uuid4(), uuid.uuid4()


@pytest.mark.django_db
def test_the_subscriptions_list_shows_only_the_callers_own(api: Client) -> None:
    mine = SubscriptionFactory(customer__user_id=ALICE, price__plan__code="family")
    SubscriptionFactory(customer__user_id=BOB)

    response = api.get("/api/v1/subscriptions", HTTP_AUTHORIZATION=bearer(ALICE))

    assert response.status_code == 200
    assert response.json() == [
        {
            "id": str(mine.id),
            "plan": "family",
            "status": "active",
            "current_period_end": "2026-02-01T00:00:00Z",
            "cancel_at_period_end": False,
            "trial_end": None,
            "requires_action": False,
            "action_url": None,
        }
    ]


@pytest.mark.django_db
def test_a_subscription_waiting_for_the_customer_shows_its_invoice_url_without_a_query_per_row(api: Client) -> None:
    waiting = SubscriptionFactory(customer__user_id=ALICE)
    InvoiceFactory(customer=waiting.customer, subscription=waiting, status="open", requires_action=True)
    for _ in range(5):
        SubscriptionFactory(customer=waiting.customer)

    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/v1/subscriptions", HTTP_AUTHORIZATION=bearer(ALICE))

    shown = {s["id"]: (s["requires_action"], s["action_url"]) for s in response.json()}
    url = Invoice.objects.get().hosted_invoice_url
    assert shown.pop(str(waiting.id)) == (True, url)
    assert set(shown.values()) == {(False, None)}
    assert len([q for q in queries.captured_queries if "billing_invoice" in q["sql"]]) == 1


@pytest.mark.django_db
def test_the_invoices_list_shows_only_the_callers_own_newest_first(api: Client) -> None:
    alice = CustomerFactory(user_id=ALICE)
    older = InvoiceFactory(customer=alice, created_at=datetime(2026, 1, 1, tzinfo=UTC), number="JIA-0001")
    newer = InvoiceFactory(
        customer=alice,
        created_at=datetime(2026, 2, 1, tzinfo=UTC),
        number="",
        status="draft",
        amount_paid=0,
        hosted_invoice_url="",
    )
    InvoiceFactory(customer__user_id=BOB)

    response = api.get("/api/v1/invoices", HTTP_AUTHORIZATION=bearer(ALICE))
    anonymous = api.get("/api/v1/invoices")

    assert response.status_code == 200
    assert response.json() == [
        {
            "id": str(newer.id),
            "number": "",
            "status": "draft",
            "amount_due": 1299,
            "amount_paid": 0,
            "currency": "eur",
            "created_at": "2026-02-01T00:00:00Z",
            "hosted_invoice_url": None,
        },
        {
            "id": str(older.id),
            "number": "JIA-0001",
            "status": "paid",
            "amount_due": 1299,
            "amount_paid": 1299,
            "currency": "eur",
            "created_at": "2026-01-01T00:00:00Z",
            "hosted_invoice_url": older.hosted_invoice_url,
        },
    ]
    assert anonymous.status_code == 401
    assert anonymous["Content-Type"] == PROBLEM


@pytest.mark.django_db
def test_a_payments_status_shows_its_refunds_as_the_contract_names_them(api: Client) -> None:
    alice = CustomerFactory(user_id=ALICE)
    PaymentFactory(customer=alice, amount=1000, refunded_amount=1000, created_at=datetime(2026, 3, 1, tzinfo=UTC))
    PaymentFactory(customer=alice, amount=1000, refunded_amount=1, created_at=datetime(2026, 2, 1, tzinfo=UTC))
    PaymentFactory(customer=alice, amount=1000, created_at=datetime(2026, 1, 1, tzinfo=UTC))

    response = api.get("/api/v1/payments", HTTP_AUTHORIZATION=bearer(ALICE))

    assert [payment["status"] for payment in response.json()] == ["refunded", "partially_refunded", "succeeded"]


@pytest.mark.django_db
def test_the_payments_list_shows_only_the_callers_own_newest_first(api: Client) -> None:
    alice = CustomerFactory(user_id=ALICE)
    older = PaymentFactory(customer=alice, amount=499, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    newer = PaymentFactory(
        customer=alice, amount=1299, refunded_amount=300, created_at=datetime(2026, 2, 1, tzinfo=UTC)
    )
    PaymentFactory(customer__user_id=BOB)

    response = api.get("/api/v1/payments", HTTP_AUTHORIZATION=bearer(ALICE))

    assert response.status_code == 200
    assert response.json() == [
        {
            "id": str(newer.id),
            "amount": 1299,
            "currency": "eur",
            "status": "partially_refunded",
            "created_at": "2026-02-01T00:00:00Z",
            "refunded_amount": 300,
        },
        {
            "id": str(older.id),
            "amount": 499,
            "currency": "eur",
            "status": "succeeded",
            "created_at": "2026-01-01T00:00:00Z",
            "refunded_amount": 0,
        },
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/subscriptions"),
        ("get", "/api/v1/payments"),
        ("get", f"/api/v1/orders/{uuid.uuid4()}"),
        ("post", f"/api/v1/subscriptions/{uuid.uuid4()}/cancel"),
    ],
)
def test_the_client_endpoints_need_a_token(api: Client, method: str, path: str) -> None:
    response = getattr(api, method)(path)

    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM


# --- cancel at period end ------------------------------------------------------------------------


@pytest.fixture
def live_subscription(stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake) -> Subscription:
    """Alice's subscription, made in (local) Stripe and recorded from its webhook."""
    price = PriceFactory(stripe_price_id=f"price_{uuid.uuid4().hex[:10]}", plan__code="family", unit_amount=1299)
    customer = customer_with_card(stripe_sdk, metadata={"user_id": str(ALICE)})
    fetched = gateway.subscription_retrieve(subscription_for(stripe_sdk, customer["id"], price))
    with transaction.atomic():
        services.subscription_upsert_from_stripe(
            stripe_subscription={**fetched, "customer": customer},
            event_created=datetime(2026, 1, 1, tzinfo=UTC),
        )
    return Subscription.objects.get()


def cancel(api: Client, subscription_id: Any, user_id: uuid.UUID) -> Any:
    return api.post(f"/api/v1/subscriptions/{subscription_id}/cancel", HTTP_AUTHORIZATION=bearer(user_id))


@pytest.mark.django_db(transaction=True)
def test_cancelling_sets_cancel_at_period_end_at_stripe_and_here(
    api: Client, live_subscription: Subscription, stripe_sdk: stripe.StripeClient
) -> None:
    response = cancel(api, live_subscription.id, ALICE)

    assert response.status_code == 200
    assert response.json()["cancel_at_period_end"] is True
    assert response.json()["status"] == "active"  # access continues until the period ends
    assert stripe_sdk.v1.subscriptions.retrieve(live_subscription.stripe_subscription_id).cancel_at_period_end is True
    assert Subscription.objects.get().cancel_at_period_end is True
    assert AuditEvent.objects.filter(
        action="subscription.cancel_requested", target_id=str(live_subscription.id), actor_id=pseudonym_for(ALICE)
    ).exists()
    assert OutboxMessage.objects.filter(type="subscription.updated", subject=f"subscription:{live_subscription.id}")


@pytest.mark.django_db(transaction=True)
def test_cancelling_twice_is_harmless(api: Client, live_subscription: Subscription) -> None:
    cancel(api, live_subscription.id, ALICE)

    again = cancel(api, live_subscription.id, ALICE)

    assert again.status_code == 200
    assert OutboxMessage.objects.filter(type="subscription.updated").count() == 1


@pytest.mark.django_db(transaction=True)
def test_another_users_subscription_is_a_404_and_stays_untouched(
    api: Client, live_subscription: Subscription, stripe_sdk: stripe.StripeClient
) -> None:
    response = cancel(api, live_subscription.id, BOB)

    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    assert stripe_sdk.v1.subscriptions.retrieve(live_subscription.stripe_subscription_id).cancel_at_period_end is False


@pytest.mark.django_db(transaction=True)
def test_a_canceled_subscription_cannot_be_canceled_again(api: Client, settings: Any) -> None:
    settings.STRIPE_API_KEY = "sk_test_unused"
    ended = SubscriptionFactory(customer__user_id=ALICE, status=Subscription.Status.CANCELED)

    response = cancel(api, ended.id, ALICE)

    assert response.status_code == 409
    assert response.json()["type"].endswith(":subscription_not_cancelable")


@pytest.mark.django_db(transaction=True)
def test_without_a_stripe_key_cancel_answers_503_not_configured(api: Client, settings: Any) -> None:
    settings.STRIPE_API_KEY = ""
    subscription = SubscriptionFactory(customer__user_id=ALICE)

    response = cancel(api, subscription.id, ALICE)

    assert response.status_code == 503
    assert response.json()["type"].endswith(":stripe_not_configured")
    assert response["Retry-After"]
    assert Subscription.objects.get().cancel_at_period_end is False


@pytest.mark.django_db
def test_the_openapi_schema_documents_the_billing_endpoints(api: Client) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    for path in ("/api/v1/plans", "/api/v1/checkout/sessions", "/api/v1/subscriptions", "/api/v1/payments"):
        assert path in schema["paths"]
    parameters = schema["paths"]["/api/v1/checkout/sessions"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in parameters] == [("Idempotency-Key", "header", True)]
