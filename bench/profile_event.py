"""`python -m bench.profile_event [--events N] [--cprofile]`: what one webhook costs, load-independent.

In this process, on the benchmark database (BENCH_DATABASE_URL, ...): one `POST /webhooks/stripe/` through
the whole middleware stack (Django's test client) and one `customer.subscription.updated` event that
activates a seeded customer's subscription, processed as the worker does (`webhook_events_drain`). For each:
SQL statements (by kind), transactions committed, Redis commands, messages sent to the broker, and the
mean wall time over N of them. `--cprofile` adds the top functions (cumulative) of processing N events.

The counts do not depend on the machine's load; the times do (run it on a quiet machine to compare them).
"""

import argparse
import cProfile
import io
import pstats
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import setup_database


class Tally:
    """What one unit of work sent to PostgreSQL, Redis and the broker."""

    def __init__(self) -> None:
        self.sql: Counter[str] = Counter()
        self.commits = 0
        self.redis: Counter[str] = Counter()
        self.broker = 0

    def as_dict(self, units: int) -> dict[str, Any]:
        return {
            "sql_statements": sum(self.sql.values()) / units,
            "sql_by_kind": {kind: n / units for kind, n in sorted(self.sql.items())},
            "commits": self.commits / units,
            "redis_commands": sum(self.redis.values()) / units,
            "redis_by_command": {cmd: n / units for cmd, n in sorted(self.redis.items())},
            "broker_messages": self.broker / units,
        }


@contextmanager
def tallied() -> Iterator[Tally]:
    """Count what goes out, by wrapping the client libraries' entry points (never our own code)."""
    import redis
    from celery.signals import before_task_publish
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper

    tally = Tally()

    def statement(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        words = sql.split()
        kind = words[0].upper() if words else "?"
        if kind == "SELECT" and "FOR UPDATE" in sql.upper():
            kind = "SELECT FOR UPDATE"
        tally.sql[kind] += 1
        return execute(sql, params, many, context)

    original_commit = BaseDatabaseWrapper._commit
    original_execute = redis.Redis.execute_command
    original_pipeline = redis.client.Pipeline.execute

    def commit(self: Any) -> Any:
        tally.commits += 1
        return original_commit(self)

    def autocommit_statement(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not connection.in_atomic_block:  # an autocommit statement is a transaction of its own
            tally.commits += 1
        return statement(execute, sql, params, many, context)

    def redis_command(self: Any, *args: Any, **options: Any) -> Any:
        tally.redis[str(args[0]).upper()] += 1
        return original_execute(self, *args, **options)

    def redis_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        tally.redis[f"PIPELINE[{len(self.command_stack)}]"] += 1
        return original_pipeline(self, *args, **kwargs)

    def published(**_: Any) -> None:
        tally.broker += 1

    BaseDatabaseWrapper._commit = commit  # type: ignore[method-assign]
    redis.Redis.execute_command = redis_command  # type: ignore[method-assign]
    redis.client.Pipeline.execute = redis_pipeline  # type: ignore[method-assign]
    before_task_publish.connect(published, weak=False)
    try:
        with connection.execute_wrapper(autocommit_statement):
            yield tally
    finally:
        BaseDatabaseWrapper._commit = original_commit  # type: ignore[method-assign]
        redis.Redis.execute_command = original_execute  # type: ignore[method-assign]
        redis.client.Pipeline.execute = original_pipeline  # type: ignore[method-assign]
        before_task_publish.disconnect(published)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_event", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200, help="events to average over (default 200)")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions of processing")
    args = parser.parse_args(argv)
    setup_database()

    from django.test import Client

    from bench.common import purge_queues
    from bench.webhooks import _seed_subscriptions, delivery, subscription_event
    from webhooks.models import WebhookEvent
    from webhooks.services import webhook_event_process, webhook_events_drain

    n = args.events
    tag = f"prof{uuid.uuid4().hex[:10]}"
    _seed_subscriptions(tag, n + 1)
    purge_queues()
    client = Client(REMOTE_ADDR="127.0.0.1")

    def post(i: int) -> None:
        request = delivery(subscription_event(f"sub_{tag}_{i}", f"cus_{tag}_{i}", event_id=f"evt_{tag}_{i}"))
        response = client.post(
            request.path, data=request.body, content_type="application/json",
            HTTP_STRIPE_SIGNATURE=request.headers["Stripe-Signature"],
        )  # fmt: skip
        assert response.status_code == 200, response.content

    post(n)  # warm: first request imports and connects
    webhook_event_process(event_id=WebhookEvent.objects.get(event_id=f"evt_{tag}_{n}").id)

    ingestion_profiler = cProfile.Profile() if args.cprofile else None
    with tallied() as ingestion:
        started = time.perf_counter()
        if ingestion_profiler:
            ingestion_profiler.enable()
        for i in range(n):
            post(i)
        if ingestion_profiler:
            ingestion_profiler.disable()
        ingestion_ms = (time.perf_counter() - started) * 1000 / n
    ids = list(
        WebhookEvent.objects.filter(event_id__startswith=f"evt_{tag}_")
        .exclude(status="processed")
        .values_list("id", flat=True)
    )
    profiler = cProfile.Profile() if args.cprofile else None
    with tallied() as processing:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        while webhook_events_drain():  # what the worker runs: batches claimed in one statement each
            pass
        if profiler:
            profiler.disable()
        processing_ms = (time.perf_counter() - started) * 1000 / len(ids)
    statuses = Counter(WebhookEvent.objects.filter(id__in=ids).values_list("status", flat=True))
    purge_queues()

    print(f"one POST /webhooks/stripe/ (mean of {n}, full middleware, test client): {ingestion_ms:.2f} ms")
    for key, value in ingestion.as_dict(n).items():
        print(f"  {key}: {value}")
    print(f"one customer.subscription.updated processed (mean of {len(ids)}; {dict(statuses)}): {processing_ms:.2f} ms")
    for key, value in processing.as_dict(len(ids)).items():
        print(f"  {key}: {value}")
    for name, ran in (("ingestion", ingestion_profiler), ("processing", profiler)):
        if ran:
            out = io.StringIO()
            pstats.Stats(ran, stream=out).sort_stats("tottime").print_stats(25)
            print(f"--- {name}: top functions by own time\n{out.getvalue()}")


if __name__ == "__main__":
    main()
