"""The webhook pipeline at scale (`python -m bench scale`; issue 17, target 4).

End to end (as the webhooks benchmark measures it: signed `customer.subscription.updated` events POSTed by
wrk until a real worker has processed every one) twice, through the same server and worker: first with an
empty inbox and outbox, then with 1,000,000 processed inbox rows and 1,000,000 published outbox rows
(bench/plans_seed.sql, generate_series, then VACUUM ANALYZE). The figure is the rate at scale against the
empty-table rate: what is due is found through partial indexes, so a million finished rows should cost
(almost) nothing. Both tables are emptied before and after (they belong to the benchmark database), so
the other benchmarks never run on the million rows. The query plans behind it: `python -m bench.plans`.
"""

from pathlib import Path

from bench.common import celery_worker, project_server, purge_queues
from bench.results import Context, Row, at_least, benchmark
from bench.webhooks import QUEUE, _end_to_end

SEED = Path(__file__).with_name("plans_seed.sql")
TABLES = ("webhooks_webhookevent", "tasks_outboxmessage")


def _empty_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)}")
        # Fresh statistics: the planner must not plan the next benchmark's queries for a million rows.
        cursor.execute(f"ANALYZE {', '.join(TABLES)}")


def _seed_a_million_each(ctx: Context) -> None:
    from django.db import connection

    ctx.progress("  seeding 1,000,000 processed inbox rows and 1,000,000 published outbox rows (a minute or two)")
    script = "\n".join(line for line in SEED.read_text().splitlines() if not line.startswith("\\"))  # no \timing
    with connection.cursor() as cursor:  # autocommit, one statement at a time: VACUUM runs in none
        for statement in filter(str.strip, script.split(";\n")):
            cursor.execute(statement)


@benchmark("scale")
def run(ctx: Context) -> list[Row]:
    c = ctx.config
    limits = {"RATE_LIMIT_WEBHOOK": "1000000/s"}
    _empty_tables()
    purge_queues()
    try:
        with project_server(c.gunicorn, env=limits) as project, celery_worker([QUEUE], c.worker) as worker:
            empty = _end_to_end(ctx, project, worker)
            _seed_a_million_each(ctx)
            at_scale = _end_to_end(ctx, project, worker, keep_processed=True)
    finally:
        _empty_tables()
        purge_queues()
    at_scale["name"] = "end to end, 1M + 1M rows"
    return [
        Row(
            "scale",
            "end to end with 1M processed inbox + 1M published outbox rows",
            at_scale["rate"],
            "events/s",
            baseline="the same, empty tables",
            baseline_value=empty["rate"],
            target=at_least(1 / 1.2),  # "within 1.2x of the empty-table figure"
            measurement=at_scale,
            baseline_measurement=empty,
        )
    ]
