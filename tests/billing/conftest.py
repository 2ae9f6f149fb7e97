"""Billing's fixtures. Stripe is `stripe_fake` (tests/support/stripe_fake.py), as everywhere."""

import uuid
from datetime import UTC, datetime

import pytest
import stripe
from django.db import transaction
from django.test import Client

from billing import services
from billing.models import Payment
from tests.support.stripe_fake import StripeFake
from tests.support.stripe_setup import confirmed_intent, customer_with_card


@pytest.fixture
def api() -> Client:
    return Client()


@pytest.fixture
def payment(stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake) -> Payment:
    """A 50.00 EUR payment that really happened (in localstripe), recorded from its webhook."""
    customer = customer_with_card(stripe_sdk, metadata={"user_id": str(uuid.uuid4())})
    intent = confirmed_intent(stripe_sdk, customer, 5000)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction.atomic():
        services.customer_upsert_from_stripe(stripe_customer=customer, event_created=created)
        services.payment_record_from_intent(payment_intent=intent, event_created=created)
    return Payment.objects.get()
