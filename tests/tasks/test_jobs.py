"""The durable-job primitive (tasks.jobs) on real rows: GDPR requests are a leased job, the webhook inbox
a job whose run holds the row lock."""

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

import kombu.exceptions
import pytest
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from billing.errors import StripeNotConfigured, StripeRateLimited, StripeRequestFailed, StripeUnavailable
from gdpr.models import DataSubjectRequest, RequestKind, RequestStatus
from payments_project.errors import Conflict, DependencyUnavailable
from tasks.errors import TransientError, is_transient
from tasks.jobs import WORKER_LOST, claim, due, outcome_fields, record_failure, sweep
from tasks.models import RetryPolicy
from tests.support.races import race, raised
from webhooks.models import WebhookEvent

pytestmark = pytest.mark.django_db(transaction=True)
T = TypeVar("T")
Status = RequestStatus


def a_request(**columns: object) -> DataSubjectRequest:
    return DataSubjectRequest.objects.create(kind=RequestKind.EXPORT, subject=f"pseudo_{uuid.uuid4().hex}", **columns)


def race_same(work: Callable[[], T], *, threads: int) -> list[T]:
    """`work` in `threads` threads at once (tests.support.races), none of them failing."""
    outcomes = race(*[work] * threads)
    assert raised(outcomes) == []
    return outcomes


# --- is_transient: the one definition BaseTask, the webhook inbox and GDPR requests share -----------------


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("the dependency timed out"),
        DependencyUnavailable("down"),
        StripeUnavailable("Stripe answered 503"),
        StripeRateLimited("Stripe answered 429"),
        StripeNotConfigured(),
        OperationalError("server closed the connection unexpectedly"),
        InterfaceError("connection already closed"),
        kombu.exceptions.OperationalError("broker unreachable"),
        ConnectionRefusedError(),
        TimeoutError(),
        BrokenPipeError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_errors_a_later_attempt_may_not_meet_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad data"),
        KeyError("customer"),
        LookupError("no provider"),
        IntegrityError("duplicate key"),
        StripeRequestFailed("This customer cannot be deleted"),
        Conflict("already open"),
        PermissionError("read-only file system"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_bugs_bad_data_and_refusals_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


# --- The retry policy ----------------------------------------------------------------------------------------


def test_the_backoff_doubles_with_jitter_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=30, max_seconds=600)

    for attempt, step in [(1, 30), (2, 60), (3, 120), (4, 240), (5, 480), (6, 600), (9, 600)]:
        delays = [policy.backoff(attempt) for _ in range(200)]
        assert all(step / 2 <= delay <= step for delay in delays), attempt
        assert len(set(delays)) > 1  # jittered: copies of one failure do not come back together


# --- claim ---------------------------------------------------------------------------------------------------


def test_of_many_workers_claiming_one_waiting_job_exactly_one_gets_it_and_one_attempt_is_counted() -> None:
    job = a_request()

    won = race_same(lambda: claim(DataSubjectRequest.objects.filter(id=job.id)), threads=6)

    assert won.count(True) == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.RUNNING, 1)
    assert job.lease_until is not None and job.lease_until > timezone.now()


def test_of_many_workers_taking_over_a_dead_workers_job_exactly_one_gets_it() -> None:
    job = a_request(status=Status.RUNNING, attempts=1, lease_until=timezone.now() - timedelta(seconds=1))

    won = race_same(lambda: claim(DataSubjectRequest.objects.filter(id=job.id)), threads=6)

    assert won.count(True) == 1
    assert DataSubjectRequest.objects.get(id=job.id).attempts == 2


def test_a_running_job_is_not_claimed_under_its_lease_but_is_once_the_lease_ran_out() -> None:
    job = a_request()
    assert claim(DataSubjectRequest.objects.filter(id=job.id))

    assert not claim(DataSubjectRequest.objects.filter(id=job.id))  # its worker is still at it

    DataSubjectRequest.objects.filter(id=job.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert claim(DataSubjectRequest.objects.filter(id=job.id))
    assert DataSubjectRequest.objects.get(id=job.id).attempts == 2


def test_a_run_under_the_row_lock_reclaims_a_running_job_at_once_and_counts_the_attempt() -> None:
    event = WebhookEvent.objects.create(
        event_id=f"evt_{uuid.uuid4().hex}",
        type="test.effect",
        livemode=False,
        provider_created_at=timezone.now(),
        raw_body="{}",
    )
    assert claim(WebhookEvent.objects.filter(id=event.id), reclaim_running=True)

    assert claim(WebhookEvent.objects.filter(id=event.id), reclaim_running=True)  # redelivered: worker died

    assert WebhookEvent.objects.get(id=event.id).attempts == 2


def test_a_finished_or_dead_job_is_never_claimed() -> None:
    for status in (Status.COMPLETED, Status.FAILED, Status.CANCELED):
        job = a_request(status=status, next_attempt_at=timezone.now() - timedelta(hours=1))

        assert not claim(DataSubjectRequest.objects.filter(id=job.id))
        assert DataSubjectRequest.objects.get(id=job.id).attempts == 0


# --- record_failure ------------------------------------------------------------------------------------------


def _claimed(**columns: object) -> DataSubjectRequest:
    job = a_request(**columns)
    assert claim(DataSubjectRequest.objects.filter(id=job.id))
    return DataSubjectRequest.objects.get(id=job.id)


def _saved(job: DataSubjectRequest) -> DataSubjectRequest:
    job.save(update_fields=outcome_fields(DataSubjectRequest))
    return DataSubjectRequest.objects.get(id=job.id)


def test_a_transient_failure_with_attempts_left_waits_for_its_backoff() -> None:
    job = _claimed()
    before = timezone.now()

    retry_in = record_failure(job, TransientError("the dependency timed out"))

    job = _saved(job)
    base = DataSubjectRequest.retry_policy.base_seconds
    assert retry_in is not None and base / 2 <= retry_in <= base
    assert job.status == Status.PENDING  # the model's "retrying" status
    assert job.lease_until is None
    assert job.last_error == "TransientError: the dependency timed out"
    assert before + timedelta(seconds=base / 2) <= job.next_attempt_at <= timezone.now() + timedelta(seconds=base)


def test_a_job_is_dead_after_the_last_attempt_its_policy_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DataSubjectRequest, "retry_policy", replace(DataSubjectRequest.retry_policy, max_attempts=3))
    job = a_request()
    outcomes = []
    for _ in range(3):
        assert claim(DataSubjectRequest.objects.filter(id=job.id))
        job = DataSubjectRequest.objects.get(id=job.id)
        outcomes.append(record_failure(job, TransientError("still down")))
        job = _saved(job)

    assert [retry_in is not None for retry_in in outcomes] == [True, True, False]
    assert (job.status, job.attempts) == (Status.FAILED, 3)  # the model's "dead" status
    assert not claim(DataSubjectRequest.objects.filter(id=job.id))


def test_a_permanent_failure_is_dead_at_once_with_its_reason() -> None:
    job = _claimed()

    assert record_failure(job, KeyError("customer")) is None

    job = _saved(job)
    assert (job.status, job.attempts, job.last_error) == (Status.FAILED, 1, "KeyError: 'customer'")


def test_the_attempts_that_decide_and_the_error_text_can_be_the_callers() -> None:
    job = _claimed()  # one run of the request, but its step has failed for the last time
    last = DataSubjectRequest.retry_policy.max_attempts

    assert record_failure(job, TransientError("503"), attempts=last, error="billing: TransientError: 503") is None

    assert _saved(job).last_error == "billing: TransientError: 503"


# --- due and sweep -------------------------------------------------------------------------------------------


def test_due_jobs_are_the_waiting_ones_whose_time_came_and_those_whose_worker_died() -> None:
    past, future = timezone.now() - timedelta(seconds=1), timezone.now() + timedelta(minutes=5)
    waiting_due = a_request(next_attempt_at=past)
    a_request(next_attempt_at=future)  # its nudge may still come
    lost = a_request(status=Status.RUNNING, lease_until=past)
    a_request(status=Status.RUNNING, lease_until=future)  # its worker is still at it
    a_request(status=Status.COMPLETED, next_attempt_at=past)

    assert set(due(DataSubjectRequest).values_list("id", flat=True)) == {waiting_due.id, lost.id}


def test_the_sweep_puts_a_dead_workers_job_back_to_waiting_and_pushes_each_job_a_grace_period_ahead() -> None:
    past = timezone.now() - timedelta(seconds=1)
    waiting = a_request(next_attempt_at=past)
    lost = a_request(status=Status.RUNNING, attempts=1, lease_until=past)

    with transaction.atomic():
        swept = sweep(DataSubjectRequest, grace=timedelta(minutes=2))

    assert set(swept) == {waiting.id, lost.id}
    lost.refresh_from_db()
    assert (lost.status, lost.attempts, lost.lease_until, lost.last_error) == (Status.PENDING, 1, None, WORKER_LOST)
    assert all(job.next_attempt_at > timezone.now() + timedelta(minutes=1) for job in DataSubjectRequest.objects.all())
    with transaction.atomic():
        assert sweep(DataSubjectRequest, grace=timedelta(minutes=2)) == []  # not again within the grace period


def test_two_sweepers_racing_take_each_due_job_once() -> None:
    past = timezone.now() - timedelta(seconds=1)
    jobs = {a_request(next_attempt_at=past).id for _ in range(40)}

    def sweeper() -> list[uuid.UUID]:
        with transaction.atomic():
            return sweep(DataSubjectRequest, grace=timedelta(minutes=2), batch=25)

    swept = race_same(sweeper, threads=2)

    together = [job_id for batch in swept for job_id in batch]
    assert len(together) == len(set(together))
    assert set(together) == jobs
