"""Bench-only Celery tasks, loaded into a benchmark's worker with `--include bench.noop_tasks`: the no-op
task whose rate through a worker is the physical baseline of the end-to-end figures.

    run a worker, pause its consumer, queue N no-ops and one `bench.noop_done`, resume it, and time
    until `bench.noop_done` has written its time in the cache (see noop_task_rate).
"""

import time
import uuid
from typing import Any

from celery import shared_task
from django.core.cache import cache


@shared_task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """Nothing: what a task costs the broker and the worker alone (a plain Celery task, not BaseTask)."""


@shared_task(name="bench.noop_done", ignore_result=True)
def noop_done(key: str) -> None:
    cache.set(key, time.time(), 600)


def noop_task_rate(*, node: str, queue: str, tasks: int, timeout: float = 300) -> dict[str, Any]:
    """No-op tasks per second through the running worker `node` consuming `queue`: the whole batch is
    queued while its consumer is paused, so the publisher's speed is not what is measured. The worker
    pool's last task may still be finishing when noop_done writes (concurrency > 1): error ≤ one task."""
    from payments_project.celery import app

    key = f"bench:noop:{uuid.uuid4().hex}"
    app.control.cancel_consumer(queue, destination=[node], reply=True)
    with app.connection_for_write() as conn:
        if waiting := conn.default_channel.queue_declare(queue=queue, passive=True).message_count:
            raise RuntimeError(f"{queue} already holds {waiting} messages: the no-op rate would include them")
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            noop.apply_async(queue=queue, producer=producer)
        noop_done.apply_async(args=[key], queue=queue, producer=producer)
    started = time.time()
    app.control.add_consumer(queue, destination=[node], reply=True)
    while (done_at := cache.get(key)) is None:
        if time.time() - started > timeout:
            raise RuntimeError(f"{tasks} no-op tasks were not done within {timeout:.0f} s")
        time.sleep(0.02)
    seconds = done_at - started
    return {"name": "no-op Celery task", "tasks": tasks + 1, "seconds": seconds, "rate": (tasks + 1) / seconds}
