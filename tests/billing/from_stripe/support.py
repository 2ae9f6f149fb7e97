"""Event times, and running a service as the webhook processor does."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction

from tasks.models import OutboxMessage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def in_processor(service: Callable[..., set[uuid.UUID]], **kwargs: Any) -> set[uuid.UUID]:
    """As the webhook processor runs a handler: inside its own transaction."""
    with transaction.atomic():
        return service(**kwargs)


def events(kind: str) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(type=kind).order_by("id"))
