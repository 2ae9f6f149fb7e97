"""A worker's liveness probe does not depend on the broker: a RabbitMQ outage restarts no worker."""

import subprocess
import time
from pathlib import Path
from typing import cast

import pytest

from payments_project.celery import app
from tests.deploy.manifests import named, pod_spec, rendered
from tests.support.broker import broker_url_through
from tests.support.proxy import TcpProxy
from tests.support.worker import celery_worker, wait_until

CHART_HEARTBEAT = "/tmp/worker-heartbeat"  # the path in the pod, replaced below


def liveness_probe(heartbeat: Path) -> list[str]:
    """The chart's worker liveness command, pointed at this test's heartbeat file."""
    (container,) = pod_spec(named(rendered("production"), "Deployment", "-worker-webhooks"))["containers"]
    command = container["livenessProbe"]["exec"]["command"]
    assert any(CHART_HEARTBEAT in part for part in command)
    return [part.replace(CHART_HEARTBEAT, str(heartbeat)) for part in command]


def probe_passes(command: list[str]) -> bool:
    return subprocess.run(command, check=False).returncode == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_stays_live_through_a_rabbitmq_outage_and_reconnects_without_a_restart(tmp_path: Path) -> None:
    heartbeat = tmp_path / "worker-heartbeat"
    probe = liveness_probe(heartbeat)
    assert not probe_passes(probe)  # no heartbeat yet: not live

    with (
        TcpProxy(5672) as rabbitmq,
        celery_worker(
            ["default"],
            env={"CELERY_BROKER_URL": broker_url_through(rabbitmq.port)},
            args=("--heartbeat-file", str(heartbeat)),
        ) as worker,
    ):
        command = cast(list[str], worker.args)
        node = command[command.index("-n") + 1]
        assert probe_passes(probe)

        # when RabbitMQ is unreachable for 20 s
        rabbitmq.cut()
        assert not app.control.ping(destination=[node], timeout=1)  # the old probe (celery inspect ping) fails
        touched = set()
        outage_ends = time.monotonic() + 20
        while time.monotonic() < outage_ends:
            touched.add(heartbeat.stat().st_mtime)
            assert probe_passes(probe)
            time.sleep(1)

        # then the worker was never unhealthy, and answers again once RabbitMQ is back, as the same process
        rabbitmq.restore()
        assert wait_until(lambda: bool(app.control.ping(destination=[node], timeout=1)), timeout=60)
        assert worker.poll() is None

    assert len(touched) >= 3  # touched every 5 s all along the outage
