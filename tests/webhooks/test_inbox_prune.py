"""Processed inbox rows are pruned after WEBHOOK_INBOX_RETENTION_DAYS, in batches that hold no long lock (#17.4)."""

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from payments_project.celery import app
from tests.support.stripe_events import inbox_event
from webhooks.models import WebhookEvent
from webhooks.services import webhook_events_prune

pytestmark = pytest.mark.django_db(transaction=True)


def aged(status: str, days: int) -> WebhookEvent:
    return inbox_event("test.effect", {"id": "obj_1"}, status=status, received_at=timezone.now() - timedelta(days=days))


def test_finished_rows_past_the_retention_go_in_batches_and_everything_else_stays(settings: Any) -> None:
    settings.WEBHOOK_INBOX_RETENTION_DAYS = 60
    old_finished = [aged("processed", 61) for _ in range(4)] + [aged("ignored", 90)]
    kept = [aged("processed", 59), aged("failed", 200), aged("dead", 200), aged("received", 200)]

    with CaptureQueriesContext(connection) as queries:
        pruned = webhook_events_prune(batch_size=2)

    assert pruned == 5
    assert not WebhookEvent.objects.filter(id__in=[e.id for e in old_finished]).exists()
    assert set(WebhookEvent.objects.values_list("id", flat=True)) == {e.id for e in kept}
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3 and all("LIMIT" in sql for sql in deletes)  # 2 + 2 + 1, each committed alone


def test_a_row_locked_by_a_replay_is_skipped_not_waited_for(settings: Any) -> None:
    settings.WEBHOOK_INBOX_RETENTION_DAYS = 60
    locked, other = aged("processed", 61), aged("processed", 61)
    holding, release = threading.Event(), threading.Event()

    def replay_holding_the_row() -> None:
        try:
            with transaction.atomic():
                WebhookEvent.objects.select_for_update().get(id=locked.id)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=replay_holding_the_row)
    thread.start()
    try:
        assert holding.wait(10)
        pruned = webhook_events_prune()
    finally:
        release.set()
        thread.join()

    assert pruned == 1
    assert list(WebhookEvent.objects.values_list("id", flat=True)) == [locked.id]
    assert not WebhookEvent.objects.filter(id=other.id).exists()


def test_beat_prunes_the_inbox_daily_on_the_webhooks_queue() -> None:
    app.loader.import_default_modules()
    scheduled = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}

    assert "webhooks.prune_inbox" in scheduled
    assert app.tasks["webhooks.prune_inbox"].queue == "webhooks"
