"""Real Celery workers as subprocesses, on the test database and the real broker."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

from payments_project.celery import app
from tasks.base import sends_flush
from tests.support.processes import background_process


def worker_env() -> dict[str, str]:
    db = connection.settings_dict  # the test database pytest-django created
    database_url = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    return {
        **os.environ,
        "DJANGO_ENV": "test",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "REDIS_URL": settings.REDIS_URL,
    }


def purge(queues: list[str]) -> None:
    sends_flush()  # what this process enqueued on commit is sent off-thread: purge it too, not after
    with app.connection_for_write() as conn:
        for name in queues:
            conn.default_channel.queue_declare(queue=name, durable=True, auto_delete=False)
            conn.default_channel.queue_purge(name)


@contextmanager
def celery_worker(
    queues: list[str],
    *,
    concurrency: int = 1,
    include: str = "",
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a worker consuming `queues` (with more `env` and `args`), wait until it answers a ping, stop it
    afterwards."""
    purge(queues)
    node = f"test-{uuid.uuid4().hex[:8]}@localhost"
    command = [sys.executable, "-m", "celery", "-A", "payments_project", "worker", "-Q", ",".join(queues)]
    command += ["-c", str(concurrency), "-n", node, "--without-gossip", "--without-mingle", "-l", "INFO"]
    if include:
        command += ["--include", include]
    command += args
    with background_process(
        command,
        name=node.split("@")[0],
        ready=lambda: bool(app.control.ping(destination=[node], timeout=0.5)),
        env={**worker_env(), **(env or {})},
    ) as process:
        yield process


def wait_until(condition, *, timeout: float = 20.0, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
