"""Query plans of the webhook pipeline at scale (#17.4), for the note: not part of `make test` or `make bench`.

    createdb jia_scratch && DATABASE_URL=postgres://postgres@127.0.0.1:5432/jia_scratch DJANGO_ENV=test \\
        .venv/bin/python manage.py migrate
    psql postgres://postgres@127.0.0.1:5432/jia_scratch -f bench/plans_seed.sql   # 1M + 1M rows, generate_series
    DJANGO_SETTINGS_MODULE=payments_project.settings.test DATABASE_URL=... .venv/bin/python -m bench.plans

Adds a few due rows in a transaction it rolls back, and prints EXPLAIN (ANALYZE, BUFFERS) of each query.
"""
# ruff: noqa: E402, E501, S608 - a one-off script: django.setup() first, the SQL is the ORM's own or literal

import uuid

import django

django.setup()
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from tasks.jobs import UpdateQuery, due, lease
from tasks.models import OutboxMessage
from webhooks.models import WebhookEvent

Status = WebhookEvent.Status


def explain(title, sql, params=()):
    with connection.cursor() as c:
        c.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
        plan = "\n".join(r[0] for r in c.fetchall())
    print(f"### {title}\n```\n{plan}\n```\n")


def qs_sql(qs):
    return qs.query.get_compiler(qs.db).as_sql()


with transaction.atomic():
    now = timezone.now()
    # What is due: a few fresh events, failed ones and one waiting on its customer; a few pending messages.
    events = [
        WebhookEvent.objects.create(
            event_id=f"evt_due_{i}",
            type="customer.subscription.updated",
            object_id="sub_x",
            customer_id=f"cus_due_{i}",
            livemode=False,
            provider_created_at=now,
            raw_body="{}",
            status=Status.RECEIVED if i % 2 else Status.FAILED,
            next_attempt_at=now - timedelta(seconds=1),
            waiting_on=f"cus_due_{i}" if i == 2 else "",
        )
        for i in range(20)
    ]
    for i in range(20):
        OutboxMessage.objects.create(type="subscription.activated", subject=f"subscription:due{i}", data={})
    with connection.cursor() as c:
        c.execute("ANALYZE webhooks_webhookevent")
        c.execute("ANALYZE tasks_outboxmessage")
    print("# Query plans at 1,000,000 processed inbox rows and 1,000,000 published outbox rows\n")
    with connection.cursor() as c:
        c.execute("SELECT status, count(*) FROM webhooks_webhookevent GROUP BY 1 ORDER BY 1")
        print("inbox:", c.fetchall())
        c.execute("SELECT status, count(*) FROM tasks_outboxmessage GROUP BY 1 ORDER BY 1")
        print("outbox:", c.fetchall(), "\n")
    e = events[1]
    # ingestion
    cols = [f.column for f in WebhookEvent._meta.local_concrete_fields]
    explain(
        "ingestion: INSERT … ON CONFLICT DO NOTHING RETURNING id (a duplicate)",
        "INSERT INTO webhooks_webhookevent (id, provider, event_id, type, object_id, customer_id, livemode, api_version, provider_created_at, raw_body, status, received_at, traceparent, attempts, next_attempt_at, last_error, waiting_on) VALUES (%s, 'stripe', 'evt_seed_500000', 't', '', '', false, '', now(), '{}', 'received', now(), '', 0, now(), '', '') ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
        [uuid.uuid4()],
    )
    # the drain's claim: a batch of what is waiting, in one statement (tasks.jobs.claim_batch)
    from django.db.models import F, Q

    from tasks.jobs import _claimable
    from webhooks.services import _CLAIM_FIELDS, _WAITING, DRAIN_BATCH

    candidates = _claimable(_WAITING, reclaim_running=False).select_for_update(skip_locked=True)
    batch = WebhookEvent.objects.filter(pk__in=candidates.order_by("next_attempt_at").values("pk")[:DRAIN_BATCH])
    upd = batch.query.chain(UpdateQuery)
    upd.add_update_values({"status": "processing", "attempts": F("attempts") + 1, "lease_until": now + lease()})
    sql, params = upd.get_compiler(batch.db).as_sql()
    explain(
        f"drain: claim a batch of {DRAIN_BATCH} (UPDATE … WHERE id IN (… FOR UPDATE SKIP LOCKED) RETURNING the payload)",
        sql + f" RETURNING id, {', '.join(_CLAIM_FIELDS)}, next_attempt_at",
        params,
    )
    # one event's claim (webhooks.process_event)

    claimable = WebhookEvent.objects.filter(id=e.id).filter(
        Q(status__in=["received", "failed"]) | Q(status="processing")
    )
    upd = claimable.query.chain(UpdateQuery)
    upd.add_update_values({"status": "processing", "attempts": F("attempts") + 1, "lease_until": now + lease()})
    sql, params = upd.get_compiler(claimable.db).as_sql()
    explain(
        "processing 1: the claim (UPDATE … RETURNING the payload)",
        sql + " RETURNING type, raw_body, provider_created_at, traceparent",
        params,
    )
    sql, params = qs_sql(
        WebhookEvent.objects.select_for_update().filter(id=e.id, status="processing").defer("raw_body")
    )
    explain("processing 2: lock the claimed row (waits for it: see webhooks.services._apply_chunk)", sql, params)
    sql, params = qs_sql(
        WebhookEvent.objects.filter(status="failed", waiting_on="cus_due_2").values_list("id", flat=True)
    )
    explain("processing 3 (after commit): events waiting on the customer just applied", sql, params)
    # sweep
    sql, params = qs_sql(
        due(WebhookEvent, now=now)
        .select_for_update(skip_locked=True)
        .order_by("next_attempt_at")
        .values_list("pk", "status")[:500]
    )
    explain("sweep: what is due (webhooks.sweep, every 30 s)", sql, params)
    sql, params = qs_sql(WebhookEvent.objects.filter(status__in=["received", "failed", "processing"]).values("id"))
    explain("sweep: backlog gauge (count)", f"SELECT count(*) FROM ({sql}) q", params)
    sql, params = qs_sql(WebhookEvent.objects.filter(status="dead").values("id"))
    explain("sweep: dead gauge (count)", f"SELECT count(*) FROM ({sql}) q", params)
    # prune
    explain(
        "prune: one batch of processed inbox rows past the retention",
        "DELETE FROM webhooks_webhookevent WHERE id IN (SELECT id FROM webhooks_webhookevent WHERE status IN ('processed','ignored') AND received_at < %s ORDER BY received_at LIMIT 1000 FOR UPDATE SKIP LOCKED)",
        [now - timedelta(days=180)],
    )
    # outbox
    earlier = OutboxMessage.objects.filter(
        subject=OuterRef("subject"), published_at__isnull=True, id__lt=OuterRef("id")
    )
    sql, params = qs_sql(
        due(OutboxMessage)
        .select_for_update(skip_locked=True, of=("self",))
        .exclude(Exists(earlier))
        .order_by("id")[: settings.OUTBOX_BATCH_SIZE]
    )
    explain("outbox dispatch: claim a batch (the due head of each subject)", sql, params)
    sql, params = qs_sql(OutboxMessage.objects.filter(status="pending").values("id"))
    explain("outbox.measure: backlog (count)", f"SELECT count(*) FROM ({sql}) q", params)
    explain(
        "outbox.measure: oldest waiting", "SELECT min(created_at) FROM tasks_outboxmessage WHERE status = 'pending'"
    )
    explain("outbox.measure: dead (count)", "SELECT count(*) FROM tasks_outboxmessage WHERE status = 'dead'")
    transaction.set_rollback(True)
