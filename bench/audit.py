"""Audit benchmark (`python -m bench audit`; issue 18 target 3, issue 17 target 2, the shared part).

Audited writes/s at 1, 4 and 8 threads of this process, each with its own database connection, for
BENCH_SECONDS each: every transaction does one domain-like write (a row INSERTed into the bare baseline's
table), `gdpr.audit.record(...)`, one more write (an UPDATE of that row: services audit, then go on, e.g.
the outbox row or a status), then commits. The baseline, measured beside each figure, is the same
transaction without `record`. A sealer thread (`audit_seal_pending`, what beat runs) works alongside, as in
production; after the run it seals what is left and the whole chain is verified, so a figure never counts
an event that did not end up in one valid chain.
"""

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.results import Context, Row, benchmark

THREADS = (1, 4, 8)


def _write(audited: bool) -> None:
    from django.db import connection, transaction

    from gdpr.audit import ActorType, AuditAction, record

    row_id = uuid.uuid4()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_baseline (id, body) VALUES (%s, %s)", [row_id, "order"])
        if audited:
            record(
                action=AuditAction.ORDER_CREATED,
                actor_type=ActorType.SYSTEM,
                actor_id="bench",
                target_type="order",
                target_id=str(row_id),
                metadata={"amount": 1000, "currency": "EUR"},
            )
        with connection.cursor() as cursor:
            cursor.execute("UPDATE bench_baseline SET body = %s WHERE id = %s", ["order created", row_id])


def _sealer(stop: threading.Event) -> Callable[[], None]:
    def loop() -> None:
        from django.db import connection

        from gdpr.audit import audit_seal_pending

        try:
            while not stop.is_set():
                while audit_seal_pending():
                    pass
                stop.wait(1)  # beat runs it every 5 s; every second here, so the run ends with little left
        finally:
            connection.close()

    return loop


def _run(threads: int, seconds: float, *, audited: bool) -> dict[str, Any]:
    stop = threading.Event()
    counts = [0] * threads
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        from django.db import connection

        try:
            while not stop.is_set():
                _write(audited)
                counts[index] += 1
        except BaseException as error:  # reported, and the figure refused
            failures.append(error)
        finally:
            connection.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    if audited:
        pool.append(threading.Thread(target=_sealer(stop)))
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} writer(s) failed: {failures[0]!r}")
    writes = sum(counts)
    return {
        "name": f"{'audited' if audited else 'unaudited'} writes, {threads} threads",
        "threads": threads,
        "writes": writes,
        "seconds": elapsed,
        "rate": writes / elapsed,
    }


def _settle() -> dict[str, Any]:
    """Seal what the run left, verify the whole chain; how long the sealing took and how many rows."""
    from gdpr.audit import audit_seal_pending, verify_chain

    started = time.perf_counter()
    sealed = 0
    while batch := audit_seal_pending():
        sealed += batch
    seconds = time.perf_counter() - started
    checked, broken = verify_chain()
    if broken is not None:
        raise RuntimeError(f"the benchmark's chain is broken: {broken}")
    return {"sealed_after_run": sealed, "seal_seconds": seconds, "chain_rows": checked}


@benchmark("audit")
def run(ctx: Context) -> list[Row]:
    seconds = max(2, min(ctx.config.seconds, 5))  # a few seconds per figure are enough here
    _run(2, 1, audited=True)  # warm-up: connections, plans
    _settle()
    rows = []
    for threads in THREADS:
        base = _run(threads, seconds, audited=False)
        audited = _run(threads, seconds, audited=True)
        audited.update(_settle())
        ctx.progress(
            f"  {threads} threads: audited {audited['rate']:.0f}/s, unaudited {base['rate']:.0f}/s; "
            f"{audited['sealed_after_run']} rows sealed after the run in {audited['seal_seconds']:.2f} s"
        )
        rows.append(
            Row(
                "audit",
                f"audited writes, {threads} thread{'s' if threads > 1 else ''}",
                audited["rate"],
                "writes/s",
                baseline="the same write unaudited",
                baseline_value=base["rate"],
                note=f"{audited['chain_rows']} events in one verified chain; "
                f"{audited['sealed_after_run']} sealed after the run",
                measurement=audited,
                baseline_measurement=base,
            )
        )
    return rows
