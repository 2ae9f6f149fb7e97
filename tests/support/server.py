"""The real web server (gunicorn) as a subprocess on the test database, for end-to-end tests."""

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.proxy import _free_port
from tests.support.worker import worker_env


@contextmanager
def gunicorn(*, workers: int = 1, threads: int = 4, **env: str) -> Iterator[str]:
    """Serve the project on a free loopback port; yields the base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "gunicorn", "payments_project.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--threads", str(threads), "--log-level", "warning"]
    log = open(f"/tmp/gunicorn-{port}.log", "wb")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen(command, env={**worker_env(), **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):  # noqa: S310 - our own loopback server
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start; see {log.name}") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
