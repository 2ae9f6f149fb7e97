"""Slow workers never lose work: a run past its soft time limit is a transient failure, retried; a run
killed at its hard limit leaves its message to be redelivered, and the claim keeps the work exactly once."""

import uuid

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from tests.support.stripe_events import delivery, stripe_event
from tests.support.worker import celery_worker, wait_until
from tests.tasks.sample_tasks import slow, stubborn
from tests.webhooks.handlers_for_tests import effects
from webhooks.models import WebhookEvent
from webhooks.services import webhook_events_sweep
from webhooks.tasks import webhook_event_process_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

Status = WebhookEvent.Status
QUEUES = ["default", "webhooks"]
INCLUDE = "tests.tasks.sample_tasks,tests.webhooks.handlers_for_tests"
TIME_LIMITS = {"CELERY_TASK_TIME_LIMIT": "4"}  # the soft limit follows: 2 s


# A message carries its time limits (its sender's settings, unless the call names them): these are the
# worker's settings too.
LIMITS = {"soft_time_limit": 2, "time_limit": 4}


def receive(client: Client, event_type: str) -> WebhookEvent:
    """test.slow takes a minute on its first run; test.stubborn too, deaf to its soft limit."""
    obj_id = f"obj_{uuid.uuid4().hex[:12]}"
    response = client.post("/webhooks/stripe/", **delivery(stripe_event(event_type, {"id": obj_id})))
    assert response.status_code == 200
    return WebhookEvent.objects.get(object_id=obj_id)


def test_a_run_past_its_soft_time_limit_is_a_transient_failure_and_runs_again(client: Client) -> None:
    event = receive(client, "test.slow")  # its nudge is purged as the worker starts: the test sends its own
    with celery_worker(QUEUES, include=INCLUDE, env=TIME_LIMITS):
        # a plain task: Celery retries it
        key = uuid.uuid4().hex
        slow.apply_async((key, 20), **LIMITS)
        assert wait_until(lambda: cache.get(f"{key}:done") == 1, timeout=30)
        assert cache.get(f"{key}:runs") == 2

        # a durable job: the failure is recorded as transient (retrying, not dead), and the sweeper reruns it
        webhook_event_process_task.apply_async((str(event.id),), **LIMITS)
        assert wait_until(
            lambda: WebhookEvent.objects.get(id=event.id).status not in (Status.RECEIVED, Status.PROCESSING), timeout=30
        )
        event.refresh_from_db()
        assert (event.status, event.last_error.split(":")[0]) == (Status.FAILED, "SoftTimeLimitExceeded")
        WebhookEvent.objects.filter(id=event.id).update(next_attempt_at=timezone.now())
        assert webhook_events_sweep() == 1
        assert wait_until(lambda: WebhookEvent.objects.get(id=event.id).status == Status.PROCESSED, timeout=30)

    assert effects(event.object_id) == 1
    assert WebhookEvent.objects.get(id=event.id).attempts == 2


def test_a_run_killed_at_its_hard_time_limit_is_redelivered_and_done_exactly_once(client: Client) -> None:
    event = receive(client, "test.stubborn")
    with celery_worker(QUEUES, include=INCLUDE, env=TIME_LIMITS):
        key = uuid.uuid4().hex
        stubborn.apply_async((key,), **LIMITS)
        webhook_event_process_task.apply_async((str(event.id),), **LIMITS)

        assert wait_until(lambda: cache.get(f"{key}:done") == 1, timeout=30)
        assert wait_until(lambda: WebhookEvent.objects.get(id=event.id).status == Status.PROCESSED, timeout=30)

    assert cache.get(f"{key}:runs") == 2
    assert effects(event.object_id) == 1
    assert WebhookEvent.objects.get(id=event.id).attempts == 2
