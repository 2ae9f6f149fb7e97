"""Real processes (workers, servers, fakes) that a test starts, waits for, and always stops."""

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def background_process(
    command: list[str], *, name: str, ready: Callable[[], bool], env: dict[str, str] | None = None, timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command`, wait until `ready()` (errors count as not yet), yield it, stop it afterwards.

    Its output goes to /tmp/<name>.log, which a failure to start points at.
    """
    log = open(f"/tmp/{name}.log", "wb")  # noqa: SIM115 - kept open for the process's life
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log.name}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _answers(ready: Callable[[], bool]) -> bool:
    try:
        return ready()
    except OSError:
        return False
