import random
from dataclasses import dataclass
from typing import ClassVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid6 import uuid7


@dataclass(frozen=True)
class RetryPolicy:
    """How many runs a job gets, and how long it waits between them: exponential, jittered, capped."""

    max_attempts: int
    base_seconds: float
    max_seconds: float

    def backoff(self, attempt: int) -> float:
        """The wait after the `attempt`-th run: "equal jitter", half the step fixed, half random."""
        step = min(self.max_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        return step / 2 + random.uniform(0, step / 2)


@dataclass(frozen=True)
class JobStatuses:
    """What a model's own status values mean to tasks.jobs (each model keeps its names)."""

    waiting: tuple[str, ...]  # may be claimed; due at next_attempt_at
    running: str | None  # claimed by a worker until lease_until (None: the claim is a row lock held for the run)
    retrying: str  # where a transient failure waits for its next attempt
    dead: str  # out of attempts, or a permanent error: a person must look


class DurableJob(models.Model):
    """A row a worker claims, runs, and retries with backoff until it is done or dead: the webhook inbox,
    GDPR requests and the outbox. tasks.jobs works these columns; each model declares its `status`
    field, what its values mean (`statuses`) and its `retry_policy`."""

    attempts = models.PositiveIntegerField(default=0)  # runs started (counted when claimed)
    next_attempt_at = models.DateTimeField(default=timezone.now)  # when a waiting job is due
    lease_until = models.DateTimeField(null=True, blank=True)  # a running job is its worker's until then
    last_error = models.TextField(blank=True)

    status: str
    statuses: ClassVar[JobStatuses]
    retry_policy: ClassVar[RetryPolicy]

    class Meta:
        abstract = True


class OutboxStatus(models.TextChoices):
    PENDING = "pending"  # waiting to be published (first time, or after a failed attempt)
    PUBLISHED = "published"
    DEAD = "dead"  # out of attempts; later messages of its subject wait behind it


class OutboxMessage(DurableJob):
    """A domain event written in the same transaction as the change it describes."""

    Status = OutboxStatus
    statuses = JobStatuses(
        waiting=(OutboxStatus.PENDING,), running=None, retrying=OutboxStatus.PENDING, dead=OutboxStatus.DEAD
    )
    # A broker outage is what fails a publish: at the cap, about a day of tries before a message is dead.
    retry_policy = RetryPolicy(max_attempts=300, base_seconds=2, max_seconds=300)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)  # time-ordered: the publish order
    type = models.CharField(max_length=128)  # also the routing key, e.g. "payment.succeeded"
    subject = models.CharField(max_length=255)  # what it is about; order is kept per subject
    data = models.JSONField(encoder=DjangoJSONEncoder)
    status = models.CharField(max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    # W3C traceparent of the span that emitted it ("" when no trace was active): the CloudEvent carries it.
    traceparent = models.CharField(max_length=55, blank=True, default="")
    lease_until = None  # the dispatcher's claim is the row lock it holds while publishing

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=OutboxStatus.values), name="outbox_status_valid"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="outbox_due_idx"),
            models.Index(fields=["subject", "id"], condition=Q(published_at__isnull=True), name="outbox_subject_idx"),
            # The dead gauge (outbox.measure, every 30 s) counts these among a million published rows.
            models.Index(fields=["created_at"], condition=Q(status="dead"), name="outbox_dead_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.subject} ({self.id})"
