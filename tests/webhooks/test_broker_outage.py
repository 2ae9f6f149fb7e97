import json
import time
import urllib.request
import uuid

import pytest
from django.utils import timezone

from tests.support.broker import broker_url_through
from tests.support.proxy import TcpProxy
from tests.support.server import gunicorn
from tests.support.stripe_events import signed, stripe_event
from tests.support.worker import celery_worker, wait_until
from tests.webhooks.handlers_for_tests import effects
from webhooks.models import WebhookEvent
from webhooks.services import webhook_events_sweep

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def post_event(base: str, obj_id: str) -> tuple[int, dict[str, object], float]:
    body = json.dumps(stripe_event("test.effect", {"id": obj_id})).encode()
    request = urllib.request.Request(  # noqa: S310 - our own loopback server
        f"{base}/webhooks/stripe/",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": signed(body)},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status, json.loads(response.read()), time.monotonic() - started


def test_an_event_accepted_while_rabbitmq_is_down_is_processed_by_the_sweeper_once_it_is_back() -> None:
    with (
        TcpProxy(5672) as rabbitmq,
        gunicorn(CELERY_BROKER_URL=broker_url_through(rabbitmq.port)) as base,
    ):
        rabbitmq.cut()
        obj_id = f"obj_{uuid.uuid4().hex[:12]}"

        status, body, seconds = post_event(base, obj_id)

        assert status == 200
        assert body == {"received": True, "duplicate": False}
        assert WebhookEvent.objects.get(object_id=obj_id).status == WebhookEvent.Status.RECEIVED
        print(f"ingestion with the broker down answered in {seconds:.2f}s")

    # The pickup grace period passes: the sweeper stops waiting for the nudge that never reached the broker.
    WebhookEvent.objects.filter(object_id=obj_id).update(next_attempt_at=timezone.now())
    with celery_worker(["webhooks"], include="tests.webhooks.handlers_for_tests"):
        assert webhook_events_sweep() == 1
        assert wait_until(lambda: WebhookEvent.objects.get(object_id=obj_id).status == WebhookEvent.Status.PROCESSED)
    assert effects(obj_id) == 1
