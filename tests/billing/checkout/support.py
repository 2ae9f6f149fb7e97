"""Calling the checkout endpoint as a signed-in user."""

import uuid
from typing import Any

from django.test import Client

from billing.models import Price
from tests.support.auth import bearer

URL = "/api/v1/checkout/sessions"
PROBLEM = "application/problem+json"
SESSIONS = "POST /v1/checkout/sessions"  # at Stripe


def checkout(client: Client, user_id: uuid.UUID, price: Price, *, key: str | None = "key-1", **overrides: Any) -> Any:
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    body.update(overrides)
    headers = {"HTTP_AUTHORIZATION": bearer(user_id, email="buyer@example.com", email_verified=True)}
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(URL, body, content_type="application/json", **headers)
