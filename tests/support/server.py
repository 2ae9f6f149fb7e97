"""The real web server (gunicorn) as a subprocess on the test database, for end-to-end tests."""

import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.processes import background_process
from tests.support.proxy import free_port
from tests.support.worker import worker_env


@contextmanager
def gunicorn(*, workers: int = 1, threads: int = 4, **env: str) -> Iterator[str]:
    """Serve the project on a free loopback port; yields the base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gunicorn", "payments_project.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--threads", str(threads), "--log-level", "warning"]

    def ready() -> bool:
        with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:  # noqa: S310 - our loopback server
            return bool(response.status == 200)

    with background_process(command, name=f"gunicorn-{port}", ready=ready, env={**worker_env(), **env}):
        yield base
