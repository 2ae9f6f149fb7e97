"""POST /api/v1/subscriptions/{id}/resume: undo a cancel at period end (alice owns, bob is another user)."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from django.db import transaction
from django.test import Client

from billing import gateway, services
from billing.models import Subscription
from gdpr.models import AuditEvent
from tasks.models import OutboxMessage
from tests.billing.factories import PriceFactory, SubscriptionFactory
from tests.support.auth import bearer
from tests.support.stripe_fake import StripeFake
from tests.support.stripe_setup import customer_with_card, subscription_for

PROBLEM = "application/problem+json"
ALICE, BOB = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def canceling(api: Client, stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake) -> Subscription:
    """Alice's subscription in (local) Stripe, recorded from its webhook, then canceled at period end by her."""
    price = PriceFactory(stripe_price_id=f"price_{uuid.uuid4().hex[:10]}", plan__code="family", unit_amount=1299)
    customer = customer_with_card(stripe_sdk, metadata={"user_id": str(ALICE)})
    fetched = gateway.subscription_retrieve(subscription_for(stripe_sdk, customer["id"], price))
    with transaction.atomic():
        services.subscription_upsert_from_stripe(
            stripe_subscription={**fetched, "customer": customer}, event_created=datetime(2026, 1, 1, tzinfo=UTC)
        )
    subscription = Subscription.objects.get()
    canceled = api.post(f"/api/v1/subscriptions/{subscription.id}/cancel", HTTP_AUTHORIZATION=bearer(ALICE))
    assert canceled.status_code == 200
    return Subscription.objects.get()


def resume(api: Client, subscription_id: Any, user_id: uuid.UUID) -> Any:
    return api.post(f"/api/v1/subscriptions/{subscription_id}/resume", HTTP_AUTHORIZATION=bearer(user_id))


def at_stripe(sdk: stripe.StripeClient, subscription: Subscription) -> bool:
    return bool(sdk.v1.subscriptions.retrieve(subscription.stripe_subscription_id).cancel_at_period_end)


@pytest.mark.django_db(transaction=True)
def test_resuming_clears_cancel_at_period_end_at_stripe_and_here(
    api: Client, canceling: Subscription, stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    assert at_stripe(stripe_sdk, canceling) is True

    response = resume(api, canceling.id, ALICE)

    assert response.status_code == 200
    assert response.json()["cancel_at_period_end"] is False
    assert at_stripe(stripe_sdk, canceling) is False
    assert Subscription.objects.get().cancel_at_period_end is False
    assert AuditEvent.objects.filter(action="subscription.resume_requested", target_id=str(canceling.id)).exists()
    assert OutboxMessage.objects.filter(type="subscription.updated").count() == 2  # the cancel, the resume
    [update] = stripe_fake.sent(f"POST /v1/subscriptions/{canceling.stripe_subscription_id}")[-1:]
    assert update.params == {"cancel_at_period_end": "false"}


@pytest.mark.django_db(transaction=True)
def test_cancel_resume_cancel_again_reaches_stripe_each_time(
    api: Client, canceling: Subscription, stripe_sdk: stripe.StripeClient
) -> None:
    assert resume(api, canceling.id, ALICE).status_code == 200

    again = api.post(f"/api/v1/subscriptions/{canceling.id}/cancel", HTTP_AUTHORIZATION=bearer(ALICE))

    assert again.json()["cancel_at_period_end"] is True
    assert at_stripe(stripe_sdk, canceling) is True  # a new Stripe idempotency key, not a replay of the first


@pytest.mark.django_db(transaction=True)
def test_another_users_subscription_is_a_404_and_stays_canceling(
    api: Client, canceling: Subscription, stripe_sdk: stripe.StripeClient
) -> None:
    response = resume(api, canceling.id, BOB)

    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    assert at_stripe(stripe_sdk, canceling) is True
    assert Subscription.objects.get().cancel_at_period_end is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("status", "cancel_at_period_end"),
    [(Subscription.Status.ACTIVE, False), (Subscription.Status.CANCELED, True)],
)
def test_a_subscription_not_set_to_cancel_is_a_409(
    api: Client, stripe_fake: StripeFake, status: str, cancel_at_period_end: bool
) -> None:
    subscription = SubscriptionFactory(
        customer__user_id=ALICE, status=status, cancel_at_period_end=cancel_at_period_end
    )

    response = resume(api, subscription.id, ALICE)

    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"].endswith(":subscription_not_resumable")
    assert stripe_fake.sent("POST /v1/subscriptions/") == []
    assert Subscription.objects.get().cancel_at_period_end is cancel_at_period_end
