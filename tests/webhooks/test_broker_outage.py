import json
import time
import urllib.request
import uuid

import pytest
from django.utils import timezone

from tests.support.auth import bearer
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


def get_entitlements(base: str, user_id: uuid.UUID) -> tuple[int, float]:
    request = urllib.request.Request(f"{base}/api/v1/entitlements", headers={"Authorization": bearer(user_id)})  # noqa: S310
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own loopback server
        return response.status, time.monotonic() - started


def test_while_rabbitmq_hangs_deliveries_answer_within_a_second_reads_go_on_and_all_is_processed_after() -> None:
    # RabbitMQ under its memory alarm blocks publishers: a hang, not a refusal. The proxy reproduces it for
    # this test's web server only (the alarm itself is node-wide: it would block every other test run).
    user_id = uuid.uuid4()
    obj_ids = [f"obj_{uuid.uuid4().hex[:12]}" for _ in range(12)]  # three times the server's threads
    with (
        celery_worker(["webhooks"], include="tests.webhooks.handlers_for_tests"),
        TcpProxy(5672) as rabbitmq,
        gunicorn(threads=4, CELERY_BROKER_URL=broker_url_through(rabbitmq.port)) as base,
    ):
        status, _, _ = post_event(base, f"obj_{uuid.uuid4().hex[:12]}")  # the web process is connected
        assert status == 200
        try:
            rabbitmq.stall()
            timings = []
            for obj_id in obj_ids:
                status, body, seconds = post_event(base, obj_id)
                assert (status, body) == (200, {"received": True, "duplicate": False})
                timings.append(seconds)
                status, seconds = get_entitlements(base, user_id)
                assert status == 200
                timings.append(seconds)
            print(f"with RabbitMQ hung: slowest answer {max(timings):.3f}s of {len(timings)}")
            assert max(timings) < 1.0
        finally:
            rabbitmq.resume()

        # Everything accepted is processed: by the nudges still held, or by the sweeper for those given up.
        WebhookEvent.objects.filter(object_id__in=obj_ids, status=WebhookEvent.Status.RECEIVED).update(
            next_attempt_at=timezone.now()
        )
        webhook_events_sweep()
        assert wait_until(
            lambda: (
                WebhookEvent.objects.filter(object_id__in=obj_ids, status=WebhookEvent.Status.PROCESSED).count()
                == len(obj_ids)
            ),
            timeout=30,
        )
    assert [effects(obj_id) for obj_id in obj_ids] == [1] * len(obj_ids)
