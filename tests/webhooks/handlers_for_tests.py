"""Handlers for event types only tests send. Imported by the tests and, with `--include`, by workers.

Their effect is an outbox row per object (a real domain write), so a test can count effects.
"""

import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.core.cache import cache

from tasks.errors import TransientError
from tasks.models import OutboxMessage
from tasks.outbox import emit
from webhooks.handlers import HANDLERS, handles


def effects(object_id: str) -> int:
    return OutboxMessage.objects.filter(type="test.effect", subject=f"object:{object_id}").count()


if "test.effect" not in HANDLERS:

    @handles("test.effect")
    def record_effect(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
        emit("test.effect", f"object:{obj['id']}", {"created": created.isoformat()})
        if obj.get("fail") == "transient" and cache.add(f"failed-once:{obj['id']}", 1):
            raise TransientError("the dependency timed out")
        if obj.get("fail") == "permanent":
            raise KeyError("customer")
        return set()

    @handles("test.slow")
    def slow_effect(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
        """Takes long on its first run only, so a test can kill the worker in the middle of it."""
        emit("test.effect", f"object:{obj['id']}", {})
        if cache.add(f"slow-started:{obj['id']}", 1):
            time.sleep(60)
        return set()

    @handles("test.pause")
    def pausing_effect(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
        """Says it started (in the cache), then takes `pause` seconds: another session acts meanwhile."""
        emit("test.effect", f"object:{obj['id']}", {})
        cache.set(f"pause-started:{obj['id']}", 1)
        time.sleep(obj["pause"])
        return set()

    @handles("test.await")
    def awaiting_effect(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
        """Waits (for `within` seconds at most) until the test.pause event about object `awaits` has started
        elsewhere, and says in the cache whether it did: two events running at once."""
        emit("test.effect", f"object:{obj['id']}", {})
        deadline = time.monotonic() + obj["within"]
        while not (started := cache.get(f"pause-started:{obj['awaits']}")) and time.monotonic() < deadline:
            time.sleep(0.05)
        cache.set(f"awaited:{obj['id']}", bool(started))
        return set()

    @handles("test.exit")
    def exit_effect(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
        """The worker is told to shut down in the middle of it (not a failure of the event)."""
        raise SystemExit("the worker is shutting down")

    @handles("test.stubborn")
    def stubborn_effect(obj: Mapping[str, Any], created: datetime) -> set[uuid.UUID]:
        """On its first run, deaf to its soft time limit (as code stuck outside Python is): only the hard
        limit ends it."""
        emit("test.effect", f"object:{obj['id']}", {})
        if cache.add(f"stubborn-started:{obj['id']}", 1):
            _outlive_soft_limit()
        return set()


def _outlive_soft_limit() -> None:
    until = time.monotonic() + 60
    while time.monotonic() < until:
        try:
            time.sleep(until - time.monotonic())
        except SoftTimeLimitExceeded:
            continue
