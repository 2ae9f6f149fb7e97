"""A web process's PostgreSQL connections (issue #13, point 7): with DATABASE_POOL_MAX_SIZE its threads share
one psycopg pool, so the process never holds more connections than the pool, whatever its thread count —
the figure the chart's connection budget multiplies. Measured on the real server in pg_stat_activity."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

from payments_project.settings.parsing import database_config

ROOT = Path(__file__).resolve().parents[2]
THREADS = 6

# A gunicorn gthread worker in miniature: THREADS threads each run a query that holds its connection for a
# while, and close it at the end as Django does when a request finishes. A monitor on a connection of its
# own samples how many server connections carry this run's application_name.
_PROCESS = """
import json, sys, threading, time
import django
django.setup()
import psycopg
from django.db import connection

tag, dsn = sys.argv[1], sys.argv[2]
peak, samples, done = [0], [0], threading.Event()

def monitor():
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while not done.is_set():
            count = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [tag]
            ).fetchone()[0]
            peak[0] = max(peak[0], count)
            samples[0] += 1
            time.sleep(0.02)

def request():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.4)")
    connection.close()

watcher = threading.Thread(target=monitor)
watcher.start()
threads = [threading.Thread(target=request) for _ in range(int(sys.argv[3]))]
started = time.monotonic()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
done.set()
watcher.join()
assert samples[0] > 0, "the monitor never sampled"
print(json.dumps({"peak": peak[0], "samples": samples[0], "seconds": round(time.monotonic() - started, 2)}))
"""


def _run(pool_max_size: int) -> dict[str, float]:
    settings = connection.settings_dict
    tag = f"pool-test-{uuid.uuid4().hex[:8]}"
    user = settings["USER"] or "postgres"
    host, port, name = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432, settings["NAME"]
    url = f"postgres://{user}@{host}:{port}/{name}?application_name={tag}"
    env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DJANGO_SETTINGS_MODULE": "payments_project.settings.test",
        "DATABASE_URL": url,
        "DATABASE_POOL_MAX_SIZE": str(pool_max_size),
    }
    dsn = f"host={host} port={port} dbname={name} user={user}"
    result = subprocess.run(
        [sys.executable, "-c", _PROCESS, tag, dsn, str(THREADS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


@pytest.mark.django_db
def test_a_processs_threads_share_a_pool_and_never_hold_more_connections_than_it() -> None:
    pooled = _run(pool_max_size=2)
    unpooled = _run(pool_max_size=0)

    assert 1 <= pooled["peak"] <= 2, pooled
    assert unpooled["peak"] > 2, unpooled  # without the pool every thread holds its own: the test can fail


def test_the_pool_is_configured_only_for_postgresql_and_hands_connections_back() -> None:
    pooled = database_config("postgres://u@db:5432/payments", pool_max_size=4, pool_timeout=10.0)
    plain = database_config("postgres://u@db:5432/payments")
    sqlite = database_config("sqlite:////tmp/x.sqlite3", pool_max_size=4)

    assert pooled["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 4, "timeout": 10.0}
    assert pooled["CONN_MAX_AGE"] == 0  # Django refuses persistent connections with a pool
    assert "pool" not in plain["OPTIONS"] and plain["CONN_MAX_AGE"] == 60
    assert "pool" not in sqlite["OPTIONS"]
