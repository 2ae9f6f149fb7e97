"""A price, and a customer and subscription made in (local) Stripe outside our checkout."""

import uuid
from typing import Any

import pytest
import stripe

from billing import gateway
from billing.models import Price
from tests.billing.factories import PriceFactory
from tests.support.stripe_fake import StripeFake
from tests.support.stripe_setup import customer_with_card, subscription_for


@pytest.fixture
def price() -> Price:
    return PriceFactory(stripe_price_id=f"price_basic_{uuid.uuid4().hex[:8]}", plan__code="basic", unit_amount=499)


@pytest.fixture
def stripe_customer(stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake) -> dict[str, Any]:
    """A customer made outside our checkout (the dashboard), naming our user, with a working card."""
    return customer_with_card(stripe_sdk, email="dash@example.com", metadata={"user_id": str(uuid.uuid4())})


@pytest.fixture
def stripe_subscription(
    stripe_sdk: stripe.StripeClient, stripe_customer: dict[str, Any], price: Price
) -> dict[str, Any]:
    created = subscription_for(stripe_sdk, stripe_customer["id"], price)
    return gateway.subscription_retrieve(created)  # what the webhook's re-fetch would get
