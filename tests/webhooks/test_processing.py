import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.utils import timezone

from tasks.models import OutboxMessage
from tests.support.races import race
from tests.support.stripe_events import delivery, stripe_event
from tests.support.worker import celery_worker, wait_until
from tests.webhooks.handlers_for_tests import effects
from webhooks.models import WebhookEvent
from webhooks.services import DRAIN_BATCH, webhook_event_process, webhook_events_drain, webhook_events_sweep
from webhooks.tasks import webhook_events_drain_task

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


def test_the_sweeper_counts_the_events_that_are_due_and_nudges_a_drain_that_runs_every_waiting_one(
    client: Client,
) -> None:
    fresh = receive(client)  # its own nudge is purged as the worker starts
    missed = receive(client)
    retry_due = receive(client)
    retry_later = receive(client)
    past = timezone.now() - timedelta(seconds=1)
    WebhookEvent.objects.filter(id=missed.id).update(next_attempt_at=past)
    WebhookEvent.objects.filter(id=retry_due.id).update(status=Status.FAILED, next_attempt_at=past)
    WebhookEvent.objects.filter(id=retry_later.id).update(status=Status.FAILED)

    with celery_worker(["webhooks"], include="tests.webhooks.handlers_for_tests"):
        assert webhook_events_sweep() == 2  # a fresh event is left to its nudge: not counted
        assert wait_until(lambda: all(effects(e.object_id) == 1 for e in (missed, retry_due, fresh)))

    assert WebhookEvent.objects.get(id=retry_later.id).status == Status.FAILED  # its backoff has not passed
    assert WebhookEvent.objects.get(id=retry_later.id).attempts == 0


def test_a_drain_runs_every_waiting_event_once_and_leaves_the_rest(client: Client) -> None:
    waiting = [receive(client) for _ in range(DRAIN_BATCH + 3)]  # more than one batch
    backing_off = receive(client)
    WebhookEvent.objects.filter(id=backing_off.id).update(status=Status.FAILED)
    dead = receive(client)
    WebhookEvent.objects.filter(id=dead.id).update(status=Status.DEAD)

    assert webhook_events_drain() == len(waiting)

    assert all(effects(event.object_id) == 1 for event in waiting)
    ran_in = OutboxMessage.objects.filter(type="test.effect").order_by("id").values_list("subject", flat=True)
    assert list(ran_in) == [f"object:{event.object_id}" for event in waiting]  # oldest first
    assert set(WebhookEvent.objects.filter(id__in=[e.id for e in waiting]).values_list("status", "attempts")) == {
        (Status.PROCESSED, 1)
    }
    assert [effects(backing_off.object_id), effects(dead.object_id)] == [0, 0]
    assert webhook_events_drain() == 0


def test_a_failing_event_of_a_drain_rolls_back_only_its_own_writes(client: Client) -> None:
    # given events a drain runs in one transaction, two of them failing after writing
    before = receive(client)
    dead = receive(client, fail="permanent")
    retrying = receive(client, fail="transient")
    after = receive(client)

    # when
    assert webhook_events_drain() == 4

    # then the failures are recorded without their writes, and the others' writes commit
    assert [effects(e.object_id) for e in (before, dead, retrying, after)] == [1, 0, 0, 1]
    statuses = dict(WebhookEvent.objects.values_list("id", "status"))
    assert [statuses[e.id] for e in (before, dead, retrying, after)] == [
        Status.PROCESSED,
        Status.DEAD,
        Status.FAILED,
        Status.PROCESSED,
    ]


def test_drains_racing_run_each_event_once(client: Client) -> None:
    events = [receive(client) for _ in range(3 * DRAIN_BATCH)]

    ran = race(*[webhook_events_drain] * 4)

    assert sum(ran) == len(events)
    assert all(effects(event.object_id) == 1 for event in events)
    assert set(WebhookEvent.objects.filter(id__in=[e.id for e in events]).values_list("attempts", flat=True)) == {1}


@pytest.mark.slow
def test_a_backlog_woken_by_one_nudge_is_shared_by_two_worker_processes(client: Client) -> None:
    # given a backlog of more than a batch, the first event of the first batch waiting for an event of the second
    awaited = f"obj_{uuid.uuid4().hex[:12]}"
    first = receive(client, "test.await", awaits=awaited, within=15)
    batch = [receive(client) for _ in range(DRAIN_BATCH - 1)]
    second = receive(client, "test.pause", id=awaited, pause=0)

    # when one drain is nudged (the deliveries' own nudges are purged as the worker starts)
    with celery_worker(["webhooks"], concurrency=2, include="tests.webhooks.handlers_for_tests"):
        webhook_events_drain_task.delay()
        assert wait_until(lambda: cache.get(f"awaited:{first.object_id}") is not None, timeout=30)

    # then the second batch ran in the other process while the first batch's drain was still running
    assert cache.get(f"awaited:{first.object_id}") is True
    assert all(effects(event.object_id) == 1 for event in [first, *batch, second])


def test_a_claimed_event_momentarily_locked_by_another_session_is_still_run_by_its_drain(client: Client) -> None:
    # given two events claimed by one drain, the second row-locked by another session while the drain runs
    # the first (as a racing claim or sweep statement holds a row whose re-check failed, until it commits)
    running = receive(client, "test.pause", pause=0.5)
    locked = receive(client)

    def lock_the_second_while_the_first_runs() -> None:
        assert wait_until(lambda: cache.get(f"pause-started:{running.object_id}") == 1)
        with transaction.atomic():
            WebhookEvent.objects.select_for_update().filter(id=locked.id, status=Status.PROCESSING).get()
            time.sleep(1)

    # when
    ran, _ = race(webhook_events_drain, lock_the_second_while_the_first_runs)

    # then the drain waited for the lock and ran it: nothing is left stranded until its lease runs out
    assert ran == 2
    assert [effects(running.object_id), effects(locked.object_id)] == [1, 1]
    assert WebhookEvent.objects.get(id=locked.id).status == Status.PROCESSED


def test_a_drain_takes_back_an_event_whose_worker_lost_its_lease_counting_the_lost_attempt(client: Client) -> None:
    lost = receive(client)
    running = receive(client)  # claimed by a live worker, under its lease
    past, future = timezone.now() - timedelta(seconds=1), timezone.now() + timedelta(minutes=5)
    WebhookEvent.objects.filter(id=lost.id).update(status=Status.PROCESSING, attempts=1, lease_until=past)
    WebhookEvent.objects.filter(id=running.id).update(status=Status.PROCESSING, attempts=1, lease_until=future)

    assert webhook_events_drain() == 1

    assert (WebhookEvent.objects.get(id=lost.id).status, WebhookEvent.objects.get(id=lost.id).attempts) == (
        Status.PROCESSED,
        2,
    )
    assert WebhookEvent.objects.get(id=running.id).status == Status.PROCESSING
    assert webhook_events_drain(reclaim=True) == 1  # a redelivered drain: that worker died
    assert effects(running.object_id) == 1


def test_a_drain_stopped_mid_batch_gives_back_what_it_had_not_started(client: Client) -> None:
    stopping = receive(client, "test.exit")  # the worker shuts down in the middle of it
    unstarted = receive(client)

    with pytest.raises(SystemExit):
        webhook_events_drain()

    assert WebhookEvent.objects.filter(id=stopping.id, status=Status.PROCESSING, attempts=1).exists()  # its lease
    unstarted.refresh_from_db()
    assert (unstarted.status, unstarted.attempts, unstarted.lease_until) == (Status.RECEIVED, 0, None)
    assert webhook_events_drain() == 1


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
