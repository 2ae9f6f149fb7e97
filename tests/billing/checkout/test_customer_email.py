"""The customer's email is one of "the user's own rows" that GDPR matches them by (API.md, "Personal data"):
only an address the identity provider vouches for (`email_verified`) is stored on it and sent to Stripe."""

import uuid

import pytest
from django.test import Client

from billing.models import Customer, Price
from tests.billing.checkout.support import URL
from tests.support.auth import bearer
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("claims", "stored"),
    [
        ({"email": "Victim@Example.com"}, ""),
        ({"email": "victim@example.com", "email_verified": "true"}, ""),  # a string is not a JSON true
        ({"email": "buyer@example.com", "email_verified": True}, "buyer@example.com"),
    ],
)
def test_only_a_verified_address_goes_on_the_customer(
    client: Client, stripe_fake: StripeFake, price: Price, claims: dict[str, object], stored: str
) -> None:
    user_id = uuid.uuid4()
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}

    response = client.post(
        URL,
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=bearer(user_id, **claims),
        HTTP_IDEMPOTENCY_KEY="k",
    )

    assert response.status_code == 201, response.content
    assert Customer.objects.get(user_id=user_id).email == stored
    [created] = stripe_fake.sent("POST /v1/customers")
    assert created.params.get("email", "") == stored


def test_a_returning_customer_without_an_address_gets_the_one_their_token_now_vouches_for(
    client: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    for key, claims in (("k1", {}), ("k2", {"email": "buyer@example.com", "email_verified": True})):
        response = client.post(
            URL,
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=bearer(user_id, **claims),
            HTTP_IDEMPOTENCY_KEY=key,
        )
        assert response.status_code == 201, response.content

    assert Customer.objects.get(user_id=user_id).email == "buyer@example.com"
