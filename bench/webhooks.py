"""Webhook benchmark (`python -m bench webhooks`; issue 17, targets 1 and 2).

1. Ingestion: `POST /webhooks/stripe/` requests/s and p99 under wrk, each request a different event
   signed just before the run, beside the bare one-INSERT view (bench/baseline_app.py) under the same
   gunicorn settings, the two in alternating pairs of runs (bench.wrk.measure_pairs). The rate limiter is
   lifted so it never answers 429 (its Redis round trip stays).
2. End to end: `customer.subscription.updated` events that activate a subscription of a known customer
   (a real billing write, audit row, outbox row, entitlement refresh), POSTed once each by wrk; events/s
   from the first POST until every one is `processed` by a real worker, beside no-op Celery tasks/s
   through a worker of the same configuration (bench/noop_tasks.py), in the same run.
3. Scaling: the end-to-end run again with one worker process (a worker at concurrency 1), beside the same
   run with two (concurrency 2), one after the other through the same server, each worker warmed by the
   no-op batch first. Each run also records the cores the whole machine was busy meanwhile (on a shared
   machine, what others take is what two processes cannot get), and the note the no-op tasks' own ratio.
   On a 2-core machine that run shares the cores with ingestion (gunicorn, wrk): recorded, not judged.
4. Backlog drain: the worker alone on events already stored (see _backlog), one worker process against
   two, each the fastest of BENCH_BACKLOG_ROUNDS runs: the worker's own scaling (issue 17, target 2).
   BENCH_WEBHOOKS_SCALING=0 skips 3 and 4.
"""

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe

from bench.common import (
    ROOT,
    Server,
    Worker,
    baseline_server,
    celery_worker,
    cpu_seconds,
    machine_busy_seconds,
    project_server,
    purge_queues,
)
from bench.noop_tasks import noop_task_rate
from bench.results import Context, Row, at_least, at_most, benchmark, row
from bench.wrk import Request, Side, Wrk, measure, measure_pairs

SECRET = "whsec_test_secret"  # noqa: S105 - the test settings' webhook secret
QUEUE = "webhooks"
MAX_RATE = 4000  # requests/s the unique-event list is sized for
PRICE = "price_demo_family_month"  # from billing/fixtures/demo_catalog.json
E2E_TIMEOUT = 600
# Events in each backlog drain run: enough that its start and finish cost < 5% of its rate (the row's note).
BACKLOG_EVENTS = int(os.environ.get("BENCH_BACKLOG_EVENTS", 6000))
# Backlog runs per worker, the fastest reported: on a shared machine a run is slowed by whatever else runs.
BACKLOG_ROUNDS = int(os.environ.get("BENCH_BACKLOG_ROUNDS", 2))


def subscription_event(subscription_id: str, customer_id: str, *, event_id: str) -> dict[str, Any]:
    now = int(time.time())
    period = {"current_period_start": now, "current_period_end": now + 30 * 86400}
    subscription = {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer_id,
        "status": "active",
        "cancel_at_period_end": False,
        "canceled_at": None,
        "ended_at": None,
        "metadata": {},
        "items": {"object": "list", "data": [{"id": f"si_{subscription_id}", "price": {"id": PRICE}, **period}]},
        **period,
    }
    return {
        "id": event_id,
        "object": "event",
        "type": "customer.subscription.updated",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": subscription, "previous_attributes": {"status": "incomplete"}},
    }


def delivery(event: dict[str, Any]) -> Request:
    body = json.dumps(event)
    signature = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
    return Request("POST", "/webhooks/stripe/", headers, body.encode())


def _seed_subscriptions(tag: str, count: int) -> None:
    """Customers with an incomplete subscription each, last changed an hour ago: what the events activate."""
    from django.core.management import call_command

    from billing.models import Customer, Price, Subscription

    call_command("import_catalog", str(ROOT / "billing" / "fixtures" / "demo_catalog.json"), verbosity=0)
    price = Price.objects.select_related("plan").get(stripe_price_id=PRICE)
    customers = Customer.objects.bulk_create(
        Customer(user_id=uuid.uuid4(), stripe_customer_id=f"cus_{tag}_{n}") for n in range(count)
    )
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    Subscription.objects.bulk_create(
        Subscription(
            customer=customer,
            plan=price.plan,
            price=price,
            stripe_subscription_id=f"sub_{tag}_{n}",
            status=Subscription.Status.INCOMPLETE,
            stripe_updated_at=an_hour_ago,
        )
        for n, customer in enumerate(customers)
    )


def _fresh_statistics(*vacuumed: str) -> None:
    """VACUUM these tables (a previous run's dead rows) and ANALYZE every table, as autovacuum would have by
    now in production. The server here runs with autovacuum off: tables the bench seeds are otherwise
    never analyzed, and the planner, counting almost no active subscriptions, read every one of them to
    refresh 20 users' entitlements (18 ms a chunk at 59,000, growing with every run: the later of two runs
    paid more). Autocommit: VACUUM runs in no transaction."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in vacuumed:
            cursor.execute(f"VACUUM {connection.ops.quote_name(table)}")
        cursor.execute("ANALYZE")


def _ingestion(ctx: Context, baseline: Server, project: Server) -> list[Row]:
    c = ctx.config

    def insert(n: int) -> Request:
        return Request("POST", "/insert", {"Content-Type": "application/json"}, b'{"n": %d}' % n)

    def webhook(n: int) -> Request:  # a new event each time; its subscription is unknown (not processed here)
        tag = uuid.uuid4().hex
        return delivery(subscription_event(f"sub_{tag}", f"cus_{tag}", event_id=f"evt_{tag}"))

    runs: dict[str, Any] = {"connections": c.connections, "threads": c.wrk_threads}
    measure("warm-up", baseline, insert, count=1000, seconds=c.warmup_seconds, **runs)
    warm = MAX_RATE * c.warmup_seconds
    measure("warm-up", project, webhook, count=warm, seconds=c.warmup_seconds, unique=True, **runs)
    ingest, base = measure_pairs(
        Side("POST /webhooks/stripe/", project, webhook, count=MAX_RATE * c.pair_seconds, unique=True),
        Side("bare one-INSERT view", baseline, insert, count=1000),
        pairs=c.pairs,
        seconds=c.pair_seconds,
        report=ctx.report,
        **runs,
    )
    name = "bare one-INSERT view"
    return [
        row("webhooks", "ingestion throughput", ingest, "rps", "req/s", baseline=(name, base), target=at_least(0.7)),
        row("webhooks", "ingestion p99", ingest, "p99_ms", "ms", baseline=(name, base), target=at_most(2.0)),
    ]


def _await_processed(ours: Any, events: int, started: float, clock: Callable[[], float]) -> None:
    """Poll until `events` of `ours` are processed; raise on one that failed or on the timeout (no beat here: a
    failed event would wait for a sweep that never comes)."""
    while (processed := ours.filter(status="processed").count()) < events:
        if stuck := ours.filter(status__in=["failed", "dead", "ignored"]).first():
            raise RuntimeError(f"event {stuck.event_id} is {stuck.status}: {stuck.last_error}")
        if clock() - started > E2E_TIMEOUT:
            raise RuntimeError(f"{processed} of {events} events processed within {E2E_TIMEOUT} s")
        time.sleep(0.05)


def _end_to_end(ctx: Context, project: Server, worker: Worker, *, keep_processed: bool = False) -> dict[str, Any]:
    from django.utils import timezone

    from webhooks.models import WebhookEvent

    events = ctx.config.events
    tag = f"bench{uuid.uuid4().hex[:12]}"
    _seed_subscriptions(tag, events)
    # From nothing (no rows or queued jobs of the ingestion run), or with only processed rows (bench.scale).
    (WebhookEvent.objects.exclude(status="processed") if keep_processed else WebhookEvent.objects.all()).delete()
    _fresh_statistics()
    purge_queues()
    ours = WebhookEvent.objects.filter(received_at__gte=timezone.now())  # the rows this run's POSTs make

    def event(n: int) -> Request:
        return delivery(subscription_event(f"sub_{tag}_{n}", f"cus_{tag}_{n}", event_id=f"evt_{tag}_{n}"))

    runs = {"connections": ctx.config.connections, "threads": ctx.config.wrk_threads}
    posting = Wrk("end-to-end POSTs", project, event, count=events, seconds=E2E_TIMEOUT, once=True, **runs)
    cpu_before, machine_before = cpu_seconds(worker.pids()), machine_busy_seconds()
    with posting as run:  # the clock starts with wrk, once the signed events are written
        started = run.started
        _await_processed(ours, events, started, time.monotonic)
        elapsed = time.monotonic() - started
        posts = run.stop()
    result = {
        "name": "end to end",
        "events": events,
        "seconds": elapsed,
        "rate": events / elapsed,
        "post_errors": posts.errors,
        "generator_cpu": posts.generator_cpu,
        "server_cpu": (cpu_seconds(worker.pids()) - cpu_before) / elapsed,  # the worker's
        "machine_cpu": (machine_busy_seconds() - machine_before) / elapsed,  # every process's, ours or not
        "worker_processes": worker.processes,
        "worker_rss_mb": worker.rss_mb(),
    }
    ctx.progress(
        f"  end to end, {worker.processes} worker process(es): {events} events in {elapsed:.1f} s"
        f" = {result['rate']:.1f} events/s (cores: worker {result['server_cpu']:.2f},"
        f" machine {result['machine_cpu']:.2f})"
    )
    return result


def _backlog(ctx: Context, project: Server, worker: Worker) -> dict[str, Any]:
    """The worker alone on a backlog: BENCH_BACKLOG_EVENTS events POSTed (stored `received`) while its
    consumer is paused, the nudges those POSTs queued purged and one drain nudge queued (as the sweeper or a
    reconciliation sends), then the consumer resumed: events/s from then until all are seen processed. The
    worker is warm (booted, its processes have run drains), the tables are in the same state for every run
    (the inbox holds the backlog alone, vacuumed; statistics fresh), and nothing but PostgreSQL and RabbitMQ
    works beside it: the worker's own scaling, not the machine's shared with ingestion."""
    from django.conf import settings

    from payments_project.celery import app
    from webhooks.models import WebhookEvent
    from webhooks.tasks import webhook_events_drain_task

    events = BACKLOG_EVENTS
    tag = f"backlog{uuid.uuid4().hex[:12]}"
    _seed_subscriptions(tag, events)
    WebhookEvent.objects.all().delete()
    purge_queues()
    app.control.cancel_consumer(QUEUE, destination=[worker.node], reply=True)
    ours = WebhookEvent.objects.filter(event_id__startswith=f"evt_{tag}_")

    def event(n: int) -> Request:
        return delivery(subscription_event(f"sub_{tag}_{n}", f"cus_{tag}_{n}", event_id=f"evt_{tag}_{n}"))

    runs = {"connections": ctx.config.connections, "threads": ctx.config.wrk_threads}
    with Wrk("backlog POSTs", project, event, count=events, seconds=E2E_TIMEOUT, once=True, **runs) as run:
        while (received := ours.count()) < events:
            if time.monotonic() - run.started > E2E_TIMEOUT:
                raise RuntimeError(f"{received} of {events} backlog events stored within {E2E_TIMEOUT} s")
            time.sleep(0.1)
        posts = run.stop()
    time.sleep(4 * settings.TASK_SEND_LINGER_SECONDS)  # the server's publishers send their last round
    with app.connection_for_write() as conn:
        nudges = conn.default_channel.queue_declare(queue=QUEUE, passive=True).message_count
    purge_queues([QUEUE])
    _fresh_statistics(WebhookEvent._meta.db_table)  # the inbox as the drain meets it: the backlog, no dead rows
    if (waiting := ours.filter(status="received").count()) != events:
        raise RuntimeError(f"{events - waiting} backlog events were not waiting when the drain was to start")
    webhook_events_drain_task.apply_async()
    cpu_before, machine_before = cpu_seconds(worker.pids()), machine_busy_seconds()
    started = time.time()
    app.control.add_consumer(QUEUE, destination=[worker.node], reply=True)
    _await_processed(ours, events, started, time.time)
    elapsed = time.time() - started
    worker_cpu, machine_cpu = cpu_seconds(worker.pids()) - cpu_before, machine_busy_seconds() - machine_before
    done = sorted(at.timestamp() for at in ours.values_list("processed_at", flat=True))  # set as each event ran
    # Start and finish effects: the rate over the middle 80% of events beside the whole run's.
    tenth, ninetieth = done[len(done) // 10], done[len(done) * 9 // 10]
    steady = (len(done) * 8 // 10) / (ninetieth - tenth)
    result = {
        "name": "backlog drain",
        "events": events,
        "seconds": elapsed,
        "rate": events / elapsed,
        "steady_rate": steady,
        "edge_effect": 1 - (events / elapsed) / steady,  # the share of the rate lost to the start and finish
        "first_processed_after": done[0] - started,
        "post_nudges_purged": nudges,
        "post_errors": posts.errors,
        "server_cpu": worker_cpu / elapsed,  # the worker's
        "worker_cpu_ms_per_event": 1000 * worker_cpu / events,
        "machine_cpu": machine_cpu / elapsed,  # every process's, ours or not
        "worker_processes": worker.processes,
        "worker_rss_mb": worker.rss_mb(),
    }
    ctx.progress(
        f"  backlog drain, {worker.processes} worker process(es): {events} events in {elapsed:.2f} s"
        f" = {result['rate']:.1f} events/s (middle 80%: {steady:.1f}/s; cores: worker {result['server_cpu']:.2f},"
        f" machine {result['machine_cpu']:.2f}; {1000 * worker_cpu / events:.2f} ms worker CPU/event;"
        f" {nudges} POST nudges purged)"
    )
    return result


def _fastest_backlog(ctx: Context, project: Server, worker: Worker) -> dict[str, Any]:
    runs = [_backlog(ctx, project, worker) for _ in range(BACKLOG_ROUNDS)]
    return {**max(runs, key=lambda run: run["rate"]), "round_rates": [run["rate"] for run in runs]}


def _noop(ctx: Context, worker: Worker) -> dict[str, Any]:
    tasks = max(ctx.config.events, 1000)
    cpu_before = cpu_seconds(worker.pids())
    result = noop_task_rate(node=worker.node, queue=QUEUE, tasks=tasks)
    result["server_cpu"] = (cpu_seconds(worker.pids()) - cpu_before) / result["seconds"]
    result["worker_rss_mb"] = worker.rss_mb()
    ctx.progress(f"  no-op tasks: {result['tasks']} in {result['seconds']:.2f} s = {result['rate']:.0f} tasks/s")
    return result


@benchmark("webhooks")
def run(ctx: Context) -> list[Row]:
    c = ctx.config
    limits = {"RATE_LIMIT_WEBHOOK": "1000000/s"}  # measure ingestion, not the limiter's 429s
    part = os.environ.get("BENCH_WEBHOOKS_PART", "")  # "ingestion" or "e2e": that half only, while iterating
    rows = []
    if part != "e2e":
        with baseline_server(c.gunicorn) as baseline, project_server(c.gunicorn, env=limits) as project:
            rows = _ingestion(ctx, baseline, project)
    if part == "ingestion":
        return rows
    # A server's publisher threads (tasks/base.py) go on sending what the ingestion's requests enqueued
    # after they were answered, until the server stops: purged only then, so none of it runs in the
    # no-op or end-to-end measurements (which get a server of their own).
    purge_queues()
    scaling = os.environ.get("BENCH_WEBHOOKS_SCALING", "1") != "0"
    backlog: dict[int, dict[str, Any]] = {}
    with project_server(c.gunicorn, env=limits) as project:
        with celery_worker([QUEUE], c.worker, include=["bench.noop_tasks"]) as worker:
            noop = _noop(ctx, worker)
            e2e = _end_to_end(ctx, project, worker)
            if scaling:
                backlog[c.worker.concurrency] = _fastest_backlog(ctx, project, worker)
        by_processes = {c.worker.concurrency: {**e2e, "noop_rate": noop["rate"]}}
        for processes in (1, 2) if scaling else ():
            if processes not in by_processes:
                purge_queues()  # the nudges the last run's drains left behind
                config = replace(c.worker, concurrency=processes)
                with celery_worker([QUEUE], config, include=["bench.noop_tasks"]) as worker:
                    warm = _noop(ctx, worker)  # as the first worker's: the same history before its runs
                    by_processes[processes] = {**_end_to_end(ctx, project, worker), "noop_rate": warm["rate"]}
                    backlog[processes] = _fastest_backlog(ctx, project, worker)
    purge_queues()  # what processing queued for queues no worker here consumes (outbox, default)
    note = f"{e2e['post_errors']} POSTs answered with an error" if e2e["post_errors"] else ""
    rows.append(
        Row(
            "webhooks",
            "end to end (POST → processed)",
            e2e["rate"],
            "events/s",
            baseline="no-op Celery task",
            baseline_value=noop["rate"],
            baseline_unit="tasks/s",
            target=at_least(0.3),
            note=note,
            measurement=e2e,
            baseline_measurement=noop,
        )
    )
    if scaling:
        one, two = by_processes[1], by_processes[2]
        rows.append(
            Row(
                "webhooks",
                "end to end, 2 worker processes (record: shares the cores with ingestion)",
                two["rate"],
                "events/s",
                baseline="1 worker process",
                baseline_value=one["rate"],
                note=(
                    f"machine busy {two['machine_cpu']:.2f} / {one['machine_cpu']:.2f} cores (all processes);"
                    f" no-op tasks {two['noop_rate'] / one['noop_rate']:.2f}x"
                ),
                measurement=two,
                baseline_measurement=one,
            )
        )
        one, two = backlog[1], backlog[2]
        rounds = " / ".join(", ".join(f"{rate:.0f}" for rate in run["round_rates"]) for run in (two, one))
        rows.append(
            Row(
                "webhooks",
                "backlog drain, 2 worker processes",
                two["rate"],
                "events/s",
                baseline="1 worker process",
                baseline_value=one["rate"],
                target=at_least(1.6),
                note=(
                    f"{two['events']} events stored, then drained; the fastest of {len(two['round_rates'])} runs"
                    f" ({rounds} events/s); machine busy {two['machine_cpu']:.2f} / {one['machine_cpu']:.2f} cores,"
                    f" worker {two['server_cpu']:.2f} / {one['server_cpu']:.2f}; worker CPU"
                    f" {two['worker_cpu_ms_per_event']:.2f} / {one['worker_cpu_ms_per_event']:.2f} ms per event;"
                    f" start and finish cost {two['edge_effect']:.0%} / {one['edge_effect']:.0%} of the rate"
                ),
                measurement=two,
                baseline_measurement=one,
            )
        )
    return rows
