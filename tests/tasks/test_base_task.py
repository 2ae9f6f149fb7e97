import os
import signal
import subprocess
import time
import uuid

import pytest
from django.core.cache import cache

from payments_project.celery import app
from tests.support.worker import celery_worker, wait_until
from tests.tasks.sample_tasks import broken, flaky, gc_frozen, slow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def worker() -> subprocess.Popen[bytes]:  # type: ignore[misc]
    with celery_worker(["default"], include="tests.tasks.sample_tasks") as process:
        yield process


def test_a_pool_process_keeps_the_loaded_project_out_of_the_garbage_collectors_scans(
    worker: subprocess.Popen[bytes],
) -> None:
    # A full collection would otherwise walk every object of the loaded project between two drains.
    key = uuid.uuid4().hex

    gc_frozen.delay(key)

    assert wait_until(lambda: cache.get(key) is not None, timeout=30)
    assert cache.get(key) > 100_000


def test_a_transient_failure_is_retried_with_backoff_until_it_succeeds(worker: subprocess.Popen[bytes]) -> None:
    key = uuid.uuid4().hex

    flaky.delay(key, 2)

    assert wait_until(lambda: cache.get(f"{key}:done") is not None, timeout=30)
    assert cache.get(f"{key}:runs") == 3


def test_a_permanent_failure_is_not_retried(worker: subprocess.Popen[bytes]) -> None:
    key = uuid.uuid4().hex

    broken.delay(key)

    assert wait_until(lambda: cache.get(f"{key}:runs") == 1)
    time.sleep(3)  # longer than the first backoff step of BaseTask.retry_policy
    assert cache.get(f"{key}:runs") == 1


def test_a_worker_process_killed_mid_task_leaves_the_task_to_be_run_again(worker: subprocess.Popen[bytes]) -> None:
    key = uuid.uuid4().hex

    slow.delay(key, 30)
    assert wait_until(lambda: cache.get(f"{key}:runs") == 1)
    children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)

    assert wait_until(lambda: cache.get(f"{key}:done") == 1, timeout=30)
    assert cache.get(f"{key}:runs") == 2


def test_tasks_accept_only_json() -> None:
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
