"""The worker's liveness signal: a file it touches while it is healthy, whose age the chart's probe checks.

`celery inspect ping` needs the broker, so a ping probe restarts every worker of a RabbitMQ outage that
outlasts failureThreshold x periodSeconds, and a restart cannot bring the broker back (nor help a worker
that is already reconnecting on its own). The heartbeat asks what a restart could fix: is the worker's
event loop still turning? It is touched by a thread of the worker's main process every HEARTBEAT_SECONDS:
- while the consumer holds a broker connection, only if the event loop ran a timer in the last
  LOOP_STALE_SECONDS (a wedged loop stops the heartbeat and the probe restarts the pod);
- while the consumer has no connection (starting, or reconnecting during an outage), unconditionally.
"""

import threading
import time
from pathlib import Path
from typing import Any

from celery import bootsteps
from click import Option

HEARTBEAT_SECONDS = 5.0
LOOP_STALE_SECONDS = 60.0

OPTION = Option(
    ("--heartbeat-file",),
    default=None,
    help="Touch this file while the worker is healthy, with or without a broker (the liveness probe's signal).",
)


class Heartbeat(bootsteps.StartStopStep):
    """Worker bootstep: a loop timer marks progress, a thread turns progress (or reconnecting) into a touch."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, heartbeat_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.path = Path(heartbeat_file) if heartbeat_file else None
        self.loop_ran_at = time.monotonic()
        self.stopping = threading.Event()

    def include_if(self, worker: Any) -> bool:
        return self.path is not None

    def start(self, worker: Any) -> None:
        worker.timer.call_repeatedly(HEARTBEAT_SECONDS, self._loop_ran)
        assert self.path is not None  # include_if
        threading.Thread(target=self._run, args=(worker, self.path), name="heartbeat", daemon=True).start()

    def stop(self, worker: Any) -> None:
        self.stopping.set()

    def _loop_ran(self) -> None:
        self.loop_ran_at = time.monotonic()

    def _run(self, worker: Any, path: Path) -> None:
        while True:
            consumer = getattr(worker, "consumer", None)
            reconnecting = consumer is None or consumer.connection is None
            if reconnecting or time.monotonic() - self.loop_ran_at < LOOP_STALE_SECONDS:
                path.touch()
            if self.stopping.wait(HEARTBEAT_SECONDS):
                return
