from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid6 import uuid7


class OutboxMessage(models.Model):
    """A domain event written in the same transaction as the change it describes."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)  # time-ordered: the publish order
    type = models.CharField(max_length=128)  # also the routing key, e.g. "payment.succeeded"
    subject = models.CharField(max_length=255)  # what it is about; order is kept per subject
    data = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(published_at__isnull=True), name="outbox_due_idx"),
            models.Index(fields=["subject", "id"], condition=Q(published_at__isnull=True), name="outbox_subject_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.subject} ({self.id})"
