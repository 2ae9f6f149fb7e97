"""What the pipeline's periodic and per-event queries read is covered by partial indexes on what is due, so
they cost the same with a million processed inbox rows and published outbox rows as with none (#17.4; the
plans at that size are in the issue's note). Here: each query can be answered from its index."""

from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.test.utils import CaptureQueriesContext

from tasks.jobs import due
from tasks.models import OutboxMessage
from tests.support.stripe_events import inbox_event
from webhooks.models import WebhookEvent
from webhooks.services import webhook_events_drain

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_sequential_scans() -> Iterator[None]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an index the query can use is used
        yield


def plan(queryset: QuerySet, *, count: bool = False) -> str:  # type: ignore[type-arg]
    sql, params = queryset.query.get_compiler(queryset.db).as_sql()
    if count:
        sql = f"SELECT count(*) FROM ({sql}) q"  # noqa: S608 (the ORM's own SQL)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_inbox_sweep_and_its_gauges_read_partial_indexes() -> None:
    swept = due(WebhookEvent).select_for_update(skip_locked=True).order_by("next_attempt_at").values("pk")[:500]
    assert "webhook_event_due_idx" in plan(swept)
    backlog = WebhookEvent.objects.filter(status__in=["received", "failed", "processing"]).values("id")
    assert "webhook_event_due_idx" in plan(backlog, count=True)
    assert "webhook_event_dead_idx" in plan(WebhookEvent.objects.filter(status="dead").values("id"), count=True)


def test_a_drains_claim_walks_the_due_index_in_its_order_and_stops_at_its_batch() -> None:
    with CaptureQueriesContext(connection) as queries:
        webhook_events_drain()  # nothing waiting yet: one claim, of nothing
    [claim] = [query["sql"] for query in queries if "SKIP LOCKED" in query["sql"]]
    # given a backlog the planner knows of
    for n in range(200):
        inbox_event("test.effect", {"id": f"obj_{n}"}, status=WebhookEvent.Status.RECEIVED)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {WebhookEvent._meta.db_table}")
        cursor.execute(f"EXPLAIN {claim}")
        claimed = "\n".join(row[0] for row in cursor.fetchall())
    # then each batch reads its rows in order and stops: not every waiting row read and sorted for each batch
    assert "Index Scan using webhook_event_due_idx" in claimed, claimed
    assert "Sort" not in claimed, claimed


def test_events_waiting_on_a_customer_are_found_from_their_partial_index() -> None:
    waiting = WebhookEvent.objects.filter(status="failed", waiting_on="cus_1").select_for_update(skip_locked=True)
    assert "webhook_event_waiting_idx" in plan(waiting.values("id"))


def test_the_outbox_claim_and_its_gauges_read_partial_indexes() -> None:
    earlier = OutboxMessage.objects.filter(
        subject=OuterRef("subject"), published_at__isnull=True, id__lt=OuterRef("id")
    )
    claim = due(OutboxMessage).select_for_update(skip_locked=True, of=("self",)).exclude(Exists(earlier))
    claimed = plan(claim.order_by("id")[:100])
    assert "outbox_due_idx" in claimed and "outbox_subject_idx" in claimed
    assert "outbox_due_idx" in plan(OutboxMessage.objects.filter(status="pending").values("id"), count=True)
    assert "outbox_dead_idx" in plan(OutboxMessage.objects.filter(status="dead").values("id"), count=True)
