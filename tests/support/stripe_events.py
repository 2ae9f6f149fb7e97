"""Stripe events as Stripe sends them (a JSON body and its Stripe-Signature header), and as the webhook
inbox holds them."""

import json
import time
import uuid
from datetime import datetime
from typing import Any

import stripe
from django.conf import settings
from django.utils import timezone

from webhooks.models import WebhookEvent


def stripe_event(event_type: str, obj: dict[str, Any], *, created: int | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": fields.pop("id", f"evt_{uuid.uuid4().hex[:24]}"),
        "object": "event",
        "api_version": fields.pop("api_version", "2024-06-20"),
        "created": created or int(time.time()),
        "data": {"object": obj},
        "livemode": fields.pop("livemode", False),
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        **fields,
    }


def signed(body: bytes | str, *, secret: str | None = None, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `body`."""
    text = body.decode() if isinstance(body, bytes) else body
    return str(
        stripe.WebhookSignature.generate_signature_header(
            text, secret or settings.STRIPE_WEBHOOK_SECRETS[0], timestamp=timestamp
        )
    )


def delivery(event: dict[str, Any], **sign_kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for Django's test client: body, content type and signature of `event`."""
    body = json.dumps(event)
    return {"data": body, "content_type": "application/json", "HTTP_STRIPE_SIGNATURE": signed(body, **sign_kwargs)}


def inbox_event(
    event_type: str, obj: dict[str, Any], *, status: str, customer_id: str = "", received_at: datetime | None = None
) -> WebhookEvent:
    """An event already in the webhook inbox, as ingestion stored it (and, by `status`, handled it)."""
    received_at = received_at or timezone.now()
    event = stripe_event(event_type, obj, created=int(received_at.timestamp()))
    return WebhookEvent.objects.create(
        event_id=event["id"],
        type=event_type,
        object_id=str(obj.get("id", "")),
        customer_id=customer_id,
        livemode=False,
        provider_created_at=received_at,
        received_at=received_at,
        raw_body=json.dumps(event),
        status=status,
        processed_at=timezone.now() if status == WebhookEvent.Status.PROCESSED else None,
    )
