import json
import os
import signal
import subprocess
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from tests.support.races import race
from tests.support.stripe_events import delivery, stripe_event
from tests.support.worker import celery_worker, wait_until
from tests.webhooks.handlers_for_tests import effects
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process, webhook_events_sweep

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status


@pytest.fixture
def three_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WebhookEvent, "retry_policy", replace(WebhookEvent.retry_policy, max_attempts=3))


def receive(client: Client, event_type: str = "test.effect", **obj: object) -> WebhookEvent:
    obj.setdefault("id", f"obj_{uuid.uuid4().hex[:12]}")
    response = client.post("/webhooks/stripe/", **delivery(stripe_event(event_type, obj)))
    assert response.status_code == 200
    return WebhookEvent.objects.get(object_id=obj["id"])


def test_a_handled_event_is_processed_and_its_effect_committed_with_the_status(client: Client) -> None:
    event = receive(client)

    assert webhook_event_process(event_id=event.id) == Status.PROCESSED

    event.refresh_from_db()
    assert event.status == Status.PROCESSED
    assert event.processed_at is not None
    assert event.attempts == 1
    assert effects(event.object_id) == 1


def test_an_event_type_without_a_handler_is_ignored_not_failed(client: Client) -> None:
    event = receive(client, "invoice.voided_someday")

    assert webhook_event_process(event_id=event.id) == Status.IGNORED
    assert WebhookEvent.objects.get(id=event.id).last_error == "no handler for this type"


def test_a_processed_event_is_not_processed_again_by_a_late_duplicate_task(client: Client) -> None:
    event = receive(client)
    webhook_event_process(event_id=event.id)

    assert webhook_event_process(event_id=event.id) is None
    assert effects(event.object_id) == 1


def test_a_transient_failure_rolls_back_the_handlers_writes_and_backs_off_then_succeeds(client: Client) -> None:
    event = receive(client, fail="transient")

    assert webhook_event_process(event_id=event.id) == Status.FAILED
    failed = WebhookEvent.objects.get(id=event.id)
    assert effects(event.object_id) == 0
    assert "timed out" in failed.last_error
    assert failed.next_attempt_at > timezone.now()

    assert webhook_event_process(event_id=event.id) == Status.PROCESSED
    assert effects(event.object_id) == 1
    assert WebhookEvent.objects.get(id=event.id).attempts == 2


def test_bad_data_goes_to_dead_at_once_with_the_reason(client: Client) -> None:
    event = receive(client, fail="permanent")

    assert webhook_event_process(event_id=event.id) == Status.DEAD
    dead = WebhookEvent.objects.get(id=event.id)
    assert dead.last_error == "KeyError: 'customer'"
    assert effects(event.object_id) == 0


def test_an_event_that_keeps_failing_goes_to_dead_after_the_last_attempt(client: Client, three_attempts: None) -> None:
    event = receive(client, fail="transient")
    WebhookEvent.objects.filter(id=event.id).update(attempts=2)

    assert webhook_event_process(event_id=event.id) == Status.DEAD
    assert "timed out" in WebhookEvent.objects.get(id=event.id).last_error


def test_an_event_whose_claims_used_up_every_attempt_is_dead_without_running(
    client: Client, three_attempts: None
) -> None:
    event = receive(client)
    WebhookEvent.objects.filter(id=event.id).update(status=Status.PROCESSING, attempts=3)  # three workers died on it

    assert webhook_event_process(event_id=event.id) == Status.DEAD
    assert effects(event.object_id) == 0


def test_two_workers_racing_for_one_event_apply_it_once(client: Client) -> None:
    events = [receive(client) for _ in range(10)]

    def worker() -> list[str | None]:
        return [webhook_event_process(event_id=event.id) for event in events]

    outcomes = [outcome for run in race(*[worker] * 4) for outcome in run]

    assert outcomes.count(Status.PROCESSED) == 10
    assert all(effects(event.object_id) == 1 for event in events)


def test_the_sweeper_enqueues_events_that_are_due_and_leaves_fresh_ones_alone(client: Client) -> None:
    fresh = receive(client)
    missed = receive(client)
    retry_due = receive(client)
    retry_later = receive(client)
    past = timezone.now() - timedelta(seconds=1)
    WebhookEvent.objects.filter(id=missed.id).update(next_attempt_at=past)
    WebhookEvent.objects.filter(id=retry_due.id).update(status=Status.FAILED, next_attempt_at=past)
    WebhookEvent.objects.filter(id=retry_later.id).update(status=Status.FAILED)

    with celery_worker(["webhooks"], include="tests.webhooks.handlers_for_tests"):
        assert webhook_events_sweep() == 2
        assert wait_until(lambda: effects(missed.object_id) == 1 and effects(retry_due.object_id) == 1)

    assert WebhookEvent.objects.get(id=fresh.id).status == Status.RECEIVED
    assert WebhookEvent.objects.get(id=retry_later.id).status == Status.FAILED


@pytest.mark.slow
def test_a_delivered_event_is_processed_by_a_real_worker(client: Client) -> None:
    with celery_worker(["webhooks"], include="tests.webhooks.handlers_for_tests"):
        event = receive(client)

        assert wait_until(lambda: WebhookEvent.objects.get(id=event.id).status == Status.PROCESSED)

    assert effects(event.object_id) == 1


@pytest.mark.slow
def test_a_worker_killed_mid_event_leaves_it_to_be_processed_exactly_once_after_redelivery(client: Client) -> None:
    with celery_worker(["webhooks"], include="tests.webhooks.handlers_for_tests") as worker:
        event = receive(client, "test.slow")
        assert wait_until(lambda: cache.get(f"slow-started:{event.object_id}") == 1)
        for child in subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(child), signal.SIGKILL)

        assert wait_until(lambda: WebhookEvent.objects.get(id=event.id).status == Status.PROCESSED, timeout=30)

    assert effects(event.object_id) == 1
    assert WebhookEvent.objects.get(id=event.id).attempts == 2


def test_the_raw_body_is_kept_exactly_as_delivered(client: Client) -> None:
    event = receive(client, note="ünïcödé")

    assert json.loads(WebhookEvent.objects.get(id=event.id).raw_body)["data"]["object"]["note"] == "ünïcödé"
