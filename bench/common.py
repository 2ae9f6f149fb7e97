"""What every benchmark needs: a migrated database, gunicorn and workers as real processes, and a
closed-loop load generator with N concurrent keep-alive clients reporting requests/s and latencies."""

import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# This process and every process it starts (which inherit the environment, later changes included).
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jia_bench"),
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
)


def setup_django() -> None:
    """Create and migrate the benchmark database, then set Django up in this process too."""
    create = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "CREATE DATABASE jia_bench"]
    subprocess.run(create, capture_output=True, check=False)  # fails harmlessly when it exists
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id uuid PRIMARY KEY, body text)")


@contextmanager
def gunicorn(workers: int = 2, threads: int = 4) -> Iterator[str]:
    port = 8700 + os.getpid() % 200
    command = [sys.executable, "-m", "gunicorn", "payments_project.wsgi:application", "-b", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--threads", str(threads), "--log-level", "warning"]
    with _process(command) as _:
        base = f"http://127.0.0.1:{port}"
        _wait_for(lambda: urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200)  # noqa: S310
        yield base


@contextmanager
def celery_worker(queues: str, concurrency: int = 1) -> Iterator[None]:
    command = [sys.executable, "-m", "celery", "-A", "payments_project", "worker", "-Q", queues]
    command += ["-c", str(concurrency), "-l", "WARNING", "--without-gossip", "--without-mingle"]
    with _process(command):
        time.sleep(3)  # connected and consuming
        yield


@contextmanager
def _process(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for(ready: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not come up")


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    def line(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return (
            f"{self.name:<34} {self.requests / self.seconds:8.0f} req/s   p50 {p50:6.1f} ms   "
            f"p99 {p99:6.1f} ms   ({self.requests} requests, {self.errors} errors)"
        )


RequestFactory = Callable[[int], tuple[str, str, bytes | None, dict[str, str]]]  # n → method, path, body, headers


def load(name: str, base: str, make_request: RequestFactory, *, clients: int = 8, seconds: float = 10) -> Result:
    """Closed loop: `clients` threads, each with its own keep-alive connection, for `seconds`."""
    host = urlsplit(base)
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        mine: list[float] = []
        failed = 0
        while time.monotonic() < deadline:
            with lock:
                n = next(counter)
            method, path, body, headers = make_request(n)
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            failed += response.status >= 400
        with lock:
            latencies.extend(mine)
            errors += failed
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result(name, len(latencies), time.monotonic() - started, latencies, errors)
