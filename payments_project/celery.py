"""The Celery app: JSON only, one durable queue per TaskQueue, late acks, and the beat schedule."""

import gc
import os

from celery import Celery
from celery.schedules import crontab, schedule
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from kombu import Exchange, Queue
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from payments_project import heartbeat
from payments_project.env import set_default_settings_module
from payments_project.schedule import BEAT_SCHEDULE
from tasks.queues import TaskQueue

set_default_settings_module()

app = Celery("payments")
# Settings load here, so a worker or beat with an insecure production setting refuses to start.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(q.value, Exchange(q.value, type="direct"), routing_key=q.value) for q in TaskQueue]
app.conf.task_default_queue = TaskQueue.DEFAULT.value
# Tasks name their queue; the prefix route catches a task that forgot to.
app.conf.task_routes = {f"{q.value}.*": {"queue": q.value} for q in TaskQueue}
# `worker --heartbeat-file PATH`: the liveness probe's signal, which does not depend on the broker.
app.user_options["worker"].add(heartbeat.OPTION)
app.steps["worker"].add(heartbeat.Heartbeat)

app.conf.beat_schedule = BEAT_SCHEDULE

app.autodiscover_tasks()

BEAT_INTERVAL = Gauge(
    "payments_beat_schedule_interval_seconds",
    "How often beat runs each periodic task (the longest gap between two runs)",
    ["task"],
    multiprocess_mode="max",
)


def schedule_interval(every: float | schedule) -> float:
    """Seconds between two runs of a beat entry: its interval, or for a crontab the gap after its next run."""
    if isinstance(every, int | float):
        return float(every)
    if not isinstance(every, crontab):
        return float(every.seconds)
    last, delta, _ = every.remaining_delta(every.now())
    next_run = last + delta
    last, delta, _ = every.remaining_delta(next_run)
    return (last + delta - next_run).total_seconds()


def beat_schedule_measure() -> None:
    """Export the schedule, for the alert on periodic tasks that did not succeed on time."""
    for entry in app.conf.beat_schedule.values():
        BEAT_INTERVAL.labels(entry["task"]).set(schedule_interval(entry["schedule"]))


@worker_process_init.connect
def _freeze_loaded_project(**_: object) -> None:
    """A pool process, as a web process (payments_project.wsgi): what the loaded project holds (about 300,000
    objects) lives as long as the process, so it is kept out of the collector's scans; a full collection of
    it took ~80 ms with the drain stopped. Garbage the fork inherited is collected first."""
    gc.collect()
    gc.freeze()


@worker_ready.connect
def _serve_worker_metrics(**_: object) -> None:
    """Expose the worker's Prometheus metrics (PROMETHEUS_MULTIPROC_DIR aggregates prefork children)."""
    beat_schedule_measure()
    port = settings.CELERY_WORKER_METRICS_PORT
    if not port:
        return
    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    start_http_server(port, registry=registry) if registry else start_http_server(port)
