"""Every Celery queue, in one place; workers subscribe to groups of these."""

from enum import StrEnum


class TaskQueue(StrEnum):
    DEFAULT = "default"
    WEBHOOKS = "webhooks"
    OUTBOX = "outbox"
    GDPR = "gdpr"
    RECONCILIATION = "reconciliation"
