"""One checkout, followed from the request through Stripe, the webhook it causes, the entitlement change and
the published events: one trace, across this process (the SDK's in-memory exporter) and real Celery workers
(exporting over OTLP/HTTP to a receiver the test owns, as production does)."""

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from django.test import Client

from billing.models import Order, Price
from tests.billing.factories import PriceFactory
from tests.entitlements.factories import plan_with
from tests.support.auth import bearer
from tests.support.broker import EventsConsumer
from tests.support.otlp import OtlpReceiver, Span, Traced, ids
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake
from tests.support.worker import celery_worker, wait_until
from webhooks.models import WebhookEvent

pytestmark = pytest.mark.django_db(transaction=True)

USER_ID = uuid.UUID("0190c6a8-2222-7000-8000-00000000beef")
EMAIL = "buyer@example.com"
CLIENT = {"REMOTE_ADDR": "203.0.113.7", "HTTP_USER_AGENT": "JiaTestPhone/1.0"}  # personal too: never in a span


@pytest.fixture
def price() -> Price:
    plan = plan_with(["hd", "offline"], family_seats=5, code="family")
    return PriceFactory(stripe_price_id="price_family_month", plan=plan, unit_amount=1299)


def checkout(client: Client, price: Price) -> Any:
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    return client.post(
        "/api/v1/checkout/sessions",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=bearer(USER_ID, email=EMAIL),
        HTTP_IDEMPOTENCY_KEY="trace-1",
        **CLIENT,
    )


def subscription_created(order: Order, metadata: dict[str, str]) -> dict[str, Any]:
    """What Stripe sends once the checkout is paid: the subscription, with the metadata we gave the session."""
    now = int(time.time())
    item = {
        "id": "si_1",
        "price": {"id": "price_family_month"},
        "current_period_start": now,
        "current_period_end": now + 2_592_000,
    }
    subscription = {
        "id": "sub_traced_1",
        "object": "subscription",
        "created": now,
        "customer": order.customer.stripe_customer_id,
        "status": "active",
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [item]},
        "metadata": metadata,
    }
    return stripe_event("customer.subscription.created", subscription, created=now)


def one(spans: list[Span], name: str, **attributes: Any) -> Span:
    found = [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


@pytest.mark.slow
def test_a_checkout_the_webhook_it_causes_the_entitlement_change_and_the_published_events_are_one_trace(
    client: Client, stripe_fake: StripeFake, price: Price, traced: Traced, otlp: OtlpReceiver
) -> None:
    consumer = EventsConsumer()
    with celery_worker(["webhooks", "outbox"], concurrency=2, env=otlp.env()):
        # the checkout: our request, Stripe's session, the order.created event
        assert checkout(client, price).status_code == 201
        order = Order.objects.select_related("customer").get()
        [session_call] = stripe_fake.sent("POST /v1/checkout/sessions")
        metadata = {
            k[len("subscription_data[metadata][") : -1]: v
            for k, v in session_call.params.items()
            if k.startswith("subscription_data[metadata][")
        }

        # Stripe's webhook, carrying the metadata we gave it
        event = subscription_created(order, metadata)
        assert client.post("/webhooks/stripe/", **delivery(event), **CLIENT).status_code == 200
        assert wait_until(lambda: WebhookEvent.objects.get(event_id=event["id"]).status == "processed", timeout=60)
        consumer.drain(expect=3, timeout=60)  # order.created, subscription.activated, entitlements.changed
        worker_spans = otlp.wait_for(lambda spans: sum(s.name == "run/outbox.dispatch" for s in spans) >= 2, timeout=60)
    here = traced.spans()
    events = {body["type"]: body for body in consumer.bodies()}
    consumer.close()

    checkout_request = one(here, "POST api/v1/checkout/sessions")
    ingestion = one(here, "POST webhooks/stripe/")
    processing = one(worker_spans, "webhook.process")
    trace_id = checkout_request.trace_id
    # Stripe got the trace with the call (header) and keeps it for the webhooks (metadata)
    assert ids(session_call.headers["traceparent"])[0] == trace_id
    assert ids(metadata["traceparent"]) == checkout_request.traceparent_ids()
    assert ids(session_call.params["metadata[traceparent]"]) == checkout_request.traceparent_ids()
    # the webhook's processing continues the checkout's trace and links to the request that received it
    assert (processing.trace_id, processing.parent_id) == checkout_request.traceparent_ids()
    assert processing.links == [ingestion.traceparent_ids()]
    assert processing.attributes["jia.webhook.type"] == "customer.subscription.created"
    assert processing.attributes["jia.webhook.status"] == "processed"
    # the drain that ran it is the ingestion request's child (Celery's headers: the nudge was sent in its context)
    task_run = one(worker_spans, "run/webhooks.drain")
    assert task_run.trace_id == ingestion.trace_id
    # every published event carries the trace: the checkout's own, and those of the entitlement change
    assert set(events) >= {"order.created", "subscription.activated", "entitlements.changed"}
    assert all(ids(events[t]["traceparent"])[0] == trace_id for t in events)
    assert ids(events["entitlements.changed"]["traceparent"]) == processing.traceparent_ids()
    # the dispatcher that published them ran in the same trace, in the worker
    dispatches = [s for s in worker_spans if s.name == "run/outbox.dispatch" and s.trace_id == trace_id]
    assert len(dispatches) >= 2
    # the instrumentations: Django, psycopg, Redis, requests (Stripe) here; Celery, psycopg in the worker
    assert {s.attributes.get("db.system") for s in here} >= {"postgresql", "redis"}
    stripe_calls = [s for s in here if s.kind == "CLIENT" and "/v1/" in str(s.attributes.get("http.url"))]
    assert {s.attributes["http.url"].split("/v1/")[1] for s in stripe_calls} >= {"customers", "checkout/sessions"}
    assert any(s.trace_id == trace_id and s.attributes.get("db.system") == "postgresql" for s in worker_spans)
    assert {s.service for s in worker_spans} == {"jia-payments"}
    # and no personal data in any attribute, here or there
    personal = (str(USER_ID), EMAIL, order.customer.stripe_customer_id, *CLIENT.values())
    for span in here + worker_spans:
        for key, value in span.attributes.items():
            assert not any(p in json.dumps(value) for p in personal), (span.name, key, value)
        assert not {"client.address", "http.client_ip", "user_agent.original", "http.user_agent"} & set(span.attributes)


def test_tracing_is_off_without_an_endpoint_and_on_with_one() -> None:
    probe = (
        "import django; django.setup(); from django.conf import settings; from opentelemetry import trace; "
        "print(type(trace.get_tracer_provider()).__name__, any('opentelemetry' in m for m in settings.MIDDLEWARE))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["DJANGO_SETTINGS_MODULE"] = "payments_project.settings.test"

    off = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    on = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert off.stdout.split() == ["ProxyTracerProvider", "False"]
    assert on.stdout.split() == ["TracerProvider", "True"]
