"""What every benchmark needs: its configuration, a migrated database, and the real processes (gunicorn,
Celery workers) on free ports, waited for until they answer, and always stopped."""

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"  # run results (<UTC timestamp>.json), process logs, request files
LOGS = VAR / "logs"

# This process and every process it starts (which inherit the environment).
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


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class GunicornConfig:
    """One configuration for the project's server and the bare baseline app in a run. The defaults
    are the production entrypoint's (scripts/docker-entrypoint.sh); access logs are off in both."""

    workers: int = 2
    threads: int = 4
    worker_class: str = "gthread"  # what gunicorn picks for --threads > 1
    keep_alive: int = 75
    timeout: int = 30

    def arguments(self) -> list[str]:
        return [
            *("--workers", str(self.workers), "--threads", str(self.threads)),
            *("--worker-class", self.worker_class, "--keep-alive", str(self.keep_alive)),
            *("--timeout", str(self.timeout), "--graceful-timeout", "5", "--log-level", "warning"),
        ]


@dataclass(frozen=True)
class WorkerConfig:
    """The Celery worker every worker benchmark and its no-op baseline share. Defaults: the production
    entrypoint's (prefork, concurrency 2, 1000 tasks per child); prefetch and late acks come from settings."""

    pool: str = "prefork"
    concurrency: int = 2
    max_tasks_per_child: int = 1000

    def arguments(self) -> list[str]:
        return [
            *("--pool", self.pool, "--concurrency", str(self.concurrency)),
            *("--max-tasks-per-child", str(self.max_tasks_per_child), "--without-gossip", "--without-mingle"),
        ]


@dataclass(frozen=True)
class Config:
    """A run's settings, from BENCH_* variables (bench/README.md)."""

    seconds: int = 10  # each measured wrk run; a ratio's side: in total over its pairs
    pairs: int = 3  # a ratio's figure and baseline: alternating pairs of runs (bench.wrk.measure_pairs)
    warmup_seconds: int = 2  # before the first measured run against a server
    connections: int = 8  # wrk -c
    wrk_threads: int = 1  # wrk -t
    events: int = 1000  # end-to-end runs: events (or tasks) per run
    gunicorn: GunicornConfig = field(default_factory=GunicornConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)

    @classmethod
    def from_environment(cls) -> "Config":
        threads = _env_int("BENCH_GUNICORN_THREADS", 4)
        return cls(
            seconds=_env_int("BENCH_SECONDS", 10),
            pairs=max(1, _env_int("BENCH_PAIRS", 3)),
            warmup_seconds=_env_int("BENCH_WARMUP_SECONDS", 2),
            connections=_env_int("BENCH_CONNECTIONS", 8),
            wrk_threads=_env_int("BENCH_WRK_THREADS", 1),
            events=_env_int("BENCH_EVENTS", 1000),
            gunicorn=GunicornConfig(
                workers=_env_int("BENCH_GUNICORN_WORKERS", 2),
                threads=threads,
                worker_class=os.environ.get("BENCH_GUNICORN_WORKER_CLASS", "gthread" if threads > 1 else "sync"),
            ),
            worker=WorkerConfig(
                pool=os.environ.get("BENCH_WORKER_POOL", "prefork"),
                concurrency=_env_int("BENCH_WORKER_CONCURRENCY", 2),
                max_tasks_per_child=_env_int("BENCH_WORKER_MAX_TASKS_PER_CHILD", 1000),
            ),
        )

    @property
    def pair_seconds(self) -> int:
        """Each run of an alternating pair: a side's `seconds` shared over the pairs, at least 2 s (wrk
        takes whole seconds; 10 s over 3 pairs: 4 s a run, 12 s a side)."""
        return max(2, math.ceil(self.seconds / self.pairs))

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "pair_seconds": self.pair_seconds}


# --- the database --------------------------------------------------------------------------------

BASELINE_TABLE_DDL = "CREATE TABLE IF NOT EXISTS bench_baseline (id uuid PRIMARY KEY, body text NOT NULL)"


def setup_database() -> None:
    """Create (if missing) and migrate the benchmark database, set Django up in this process, and
    create (or empty) the bare baseline app's table."""
    import psycopg
    from psycopg import sql

    url = urlsplit(os.environ["DATABASE_URL"])
    name = url.path.lstrip("/")
    with psycopg.connect(url._replace(path="/postgres").geturl(), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(BASELINE_TABLE_DDL)
        cursor.execute("TRUNCATE bench_baseline")  # every run's baseline inserts into an empty table


def purge_queues(names: list[str] | None = None) -> None:
    """Empty the broker queues (all of the project's by default): no job left from another run."""
    from payments_project.celery import app
    from tasks.queues import TaskQueue

    with app.connection_for_write() as conn:
        for name in names or [q.value for q in TaskQueue]:
            conn.default_channel.queue_declare(queue=name, durable=True, auto_delete=False)
            conn.default_channel.queue_purge(name)


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def managed_process(
    command: list[str],
    *,
    name: str,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command`, wait until `ready()` (errors count as not yet), yield it, and always stop it
    (SIGTERM, then SIGKILL after 15 s). Its output goes to var/bench/logs/<name>.log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while not _answers(ready):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become ready within {timeout:.0f} s; see {log_path}")
                time.sleep(0.1)
            yield process
        finally:
            _stop(process)


def _answers(ready: Callable[[], bool]) -> bool:
    try:
        return ready()
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def children(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's workers, a Celery worker's pool processes)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):  # the thread ended
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU time every core of this machine spent busy so far (/proc/stat: all but idle and iowait), whoever
    used it: over a run, the machine's load beside what the run's own processes used."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A running gunicorn: its URL, its master, and what its workers use."""

    name: str
    base_url: str
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def worker_rss_mb(self) -> list[float]:
        return [mb for mb in (rss_mb(pid) for pid in children(self.process.pid)) if mb is not None]


@contextmanager
def gunicorn(
    wsgi: str, *, name: str, config: GunicornConfig, ready_path: str, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gunicorn", wsgi, "--bind", f"127.0.0.1:{port}", *config.arguments()]

    def ready() -> bool:
        with urllib.request.urlopen(f"{base}{ready_path}", timeout=2) as response:  # noqa: S310 - our URL
            return bool(response.status == 200)

    with managed_process(command, name=name, ready=ready, env=env) as process:
        yield Server(name, base, process)


def project_server(config: GunicornConfig, *, env: Mapping[str, str] | None = None) -> AbstractContextManager[Server]:
    """The project (payments_project.wsgi with bench.settings); `env` adds settings for this server only."""
    return gunicorn("payments_project.wsgi:application", name="project", config=config, ready_path="/healthz", env=env)


def baseline_server(config: GunicornConfig, *, env: Mapping[str, str] | None = None) -> AbstractContextManager[Server]:
    """The bare one-file app of bench/baseline_app.py, under the same gunicorn configuration."""
    return gunicorn("bench.baseline_app:application", name="baseline", config=config, ready_path="/constant", env=env)


@dataclass
class Worker:
    node: str
    process: subprocess.Popen[bytes]
    processes: int  # its pool's concurrency

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def rss_mb(self) -> list[float]:
        return [mb for mb in (rss_mb(pid) for pid in self.pids()) if mb is not None]


@contextmanager
def celery_worker(
    queues: list[str], config: WorkerConfig, *, include: list[str] | None = None, env: Mapping[str, str] | None = None
) -> Iterator[Worker]:
    """A real worker of the project's Celery app (plus the modules in `include`), ready once it answers a ping."""
    from payments_project.celery import app

    node = f"bench-{uuid.uuid4().hex[:8]}@localhost"
    command = [sys.executable, "-m", "celery", "-A", "payments_project", "worker", "-n", node, "-Q", ",".join(queues)]
    command += [*config.arguments(), "--loglevel", "WARNING"]
    if include:
        command += ["--include", ",".join(include)]
    ready = lambda: bool(app.control.ping(destination=[node], timeout=0.5))  # noqa: E731
    with managed_process(command, name=node.split("@")[0], ready=ready, env=env) as process:
        yield Worker(node, process, config.concurrency)
