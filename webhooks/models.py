from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid6 import uuid7

from tasks.models import DurableJob, JobStatuses, RetryPolicy


class Provider(models.TextChoices):
    STRIPE = "stripe"


class EventStatus(models.TextChoices):
    RECEIVED = "received"  # stored, waiting for a worker
    PROCESSING = "processing"  # claimed by a worker until lease_until (attempts counts the claims)
    PROCESSED = "processed"
    IGNORED = "ignored"  # no handler, other livemode, or marked ignored by staff
    FAILED = "failed"  # a transient failure; retried at next_attempt_at
    DEAD = "dead"  # bad data, or out of attempts: needs a person (admin replay)


class WebhookEvent(DurableJob):
    """The inbox: every correctly signed provider event, stored before it is acknowledged."""

    Provider = Provider
    Status = EventStatus
    statuses = JobStatuses(
        waiting=(EventStatus.RECEIVED, EventStatus.FAILED),
        running=EventStatus.PROCESSING,
        retrying=EventStatus.FAILED,
        dead=EventStatus.DEAD,
    )
    retry_policy = RetryPolicy(max_attempts=8, base_seconds=30, max_seconds=3600)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.STRIPE)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=128)
    object_id = models.CharField(max_length=255, blank=True)
    customer_id = models.CharField(max_length=255, blank=True)  # the provider's customer id
    livemode = models.BooleanField()
    api_version = models.CharField(max_length=32, blank=True)
    provider_created_at = models.DateTimeField()
    raw_body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    # W3C traceparent of the request (or gap-filling run) that stored it: its processing span links to it.
    traceparent = models.CharField(max_length=55, blank=True, default="")
    # A failed event whose customer (or what hangs off it) has not landed yet: the provider's customer id it
    # waits on. The next event of that customer to be applied wakes it (webhooks.services); "" otherwise.
    waiting_on = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_unique_per_provider"),
            models.CheckConstraint(condition=Q(status__in=EventStatus.values), name="webhook_event_status_valid"),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["received", "processing", "failed"]),
                name="webhook_event_due_idx",
            ),
            models.Index(
                fields=["waiting_on"],
                condition=Q(status="failed") & ~Q(waiting_on=""),
                name="webhook_event_waiting_idx",
            ),
            # The dead gauge (webhooks.sweep, every 30 s) counts these among a million processed rows.
            models.Index(fields=["received_at"], condition=Q(status="dead"), name="webhook_event_dead_idx"),
            models.Index(fields=["type", "status"], name="webhook_event_type_idx"),
            # Exact lookups only (erasure, admin search): a plain index, not db_index's extra LIKE index on
            # PostgreSQL, which every insert and status change would maintain for nothing.
            models.Index(fields=["customer_id"], name="webhook_event_customer_idx"),
            models.Index(fields=["received_at"], name="webhook_event_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_id} {self.type} ({self.status})"


class SyncCursor(models.Model):
    """Where the gap-filling resumes: the newest provider event already in the inbox.

    The lease makes one run at a time own the cursor (a second, overlapping run walks away); a run
    that died frees it when the lease expires.
    """

    name = models.CharField(max_length=64, primary_key=True)
    last_event_id = models.CharField(max_length=255, blank=True)
    last_event_created = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_event_id or 'start'}"


class DiscrepancyKind(models.TextChoices):
    SUBSCRIPTION_STATUS = "subscription_status"
    SUBSCRIPTION_PERIOD_END = "subscription_period_end"
    SUBSCRIPTION_CANCEL_AT_PERIOD_END = "subscription_cancel_at_period_end"
    SUBSCRIPTION_MISSING_IN_STRIPE = "subscription_missing_in_stripe"
    PAYMENT_STATUS = "payment_status"
    PAYMENT_AMOUNT = "payment_amount"
    PAYMENT_REFUNDED_AMOUNT = "payment_refunded_amount"
    PAYMENT_MISSING_IN_STRIPE = "payment_missing_in_stripe"


class DiscrepancyResolution(models.TextChoices):
    AGREED = "agreed"  # a later comparison found both sides equal
    FIXED_FROM_STRIPE = "fixed_from_stripe"  # Stripe's newer state applied through the webhook services
    MANUAL = "manual"  # a person marked it resolved, with a reason


class Discrepancy(models.Model):
    """A difference between our state and Stripe's, found by the nightly comparison."""

    Kind = DiscrepancyKind
    Resolution = DiscrepancyResolution

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    kind = models.CharField(max_length=48, choices=DiscrepancyKind.choices)
    object_type = models.CharField(max_length=32)  # "subscription" or "payment"
    object_id = models.UUIDField()  # our id
    stripe_id = models.CharField(max_length=255)
    our_value = models.TextField(blank=True)
    stripe_value = models.TextField(blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=24, choices=DiscrepancyResolution.choices, blank=True)
    resolved_by = models.CharField(max_length=255, blank=True)
    resolution_note = models.TextField(blank=True)

    class Meta:
        constraints = [
            # Reruns update the open row instead of piling up duplicates.
            models.UniqueConstraint(
                fields=["object_type", "object_id", "kind"],
                condition=Q(resolved_at__isnull=True),
                name="discrepancy_one_open_per_object_and_kind",
            ),
            models.CheckConstraint(condition=Q(kind__in=DiscrepancyKind.values), name="discrepancy_kind_valid"),
            models.CheckConstraint(
                condition=Q(resolution__in=[*DiscrepancyResolution.values, ""]), name="discrepancy_resolution_valid"
            ),
        ]
        indexes = [models.Index(fields=["resolved_at", "first_seen_at"], name="discrepancy_open_idx")]
        verbose_name_plural = "discrepancies"

    def __str__(self) -> str:
        return f"{self.kind} {self.object_type}:{self.object_id}"
