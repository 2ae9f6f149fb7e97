import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.cache import cache

# Stripe for every test: `stripe_fake`, `stripe_sdk`; tracing: `traced` (this process), `otlp` (subprocesses)
pytest_plugins = ["tests.support.stripe_fake", "tests.support.otlp"]

SERVICES = {
    "PostgreSQL": ("DATABASE_URL", 5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
    "RabbitMQ": ("CELERY_BROKER_URL", 5672, "rabbitmq-server -detached"),
    "Redis": ("REDIS_URL", 6379, "redis-server --daemonize yes --port 6379 --save ''"),
}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail fast, naming the service that is down, instead of a wall of connection errors."""
    down = []
    for name, (setting, default_port, start) in SERVICES.items():
        url = urlsplit(getattr(settings, setting))
        host, port = url.hostname or "127.0.0.1", url.port or default_port
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            down.append(f"{name} is unreachable at {host}:{port} ({exc}); start it with: {start}")
    if down:
        pytest.exit("\n".join(down), returncode=3)


@pytest.fixture(autouse=True)
def _sends_done() -> Iterator[None]:
    """Tasks a test enqueued on commit are sent (off its thread) before the next test purges queues."""
    from tasks.base import sends_flush  # after Django is set up

    yield
    sends_flush()


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Every test starts with an empty cache (a dedicated Redis database in the test settings)."""
    cache.clear()
