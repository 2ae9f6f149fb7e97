"""Beat's scheduler: django-celery-beat's DatabaseScheduler, with the code's schedule synced in at start.

Beat's state (when each job last ran) lives in the database, not in a file of the pod: a release that
recreates beat keeps it, so a nightly job whose hour passed while beat was being replaced runs as soon as
the new beat starts instead of being skipped until the next night. What runs when stays in code
(payments_project/schedule.py): at each start, rows are made to match it, entries gone from code are
deleted, and an unchanged entry is not written (its last run is kept).
"""

from collections.abc import Mapping
from typing import Any

from celery.schedules import crontab
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from payments_project.schedule import BEAT_SCHEDULE


def _schedule_fields(every: float | crontab) -> dict[str, Any]:
    if isinstance(every, crontab):
        spec = CrontabSchedule.from_schedule(every)
        return {"crontab": spec if spec.pk else CrontabSchedule.objects.create(**_crontab_spec(spec)), "interval": None}
    interval, _ = IntervalSchedule.objects.get_or_create(every=int(every), period=IntervalSchedule.SECONDS)
    return {"interval": interval, "crontab": None}


def _crontab_spec(spec: CrontabSchedule) -> dict[str, Any]:
    names = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")
    return {name: getattr(spec, name) for name in names}


@transaction.atomic
def beat_schedule_sync(schedule: Mapping[str, Mapping[str, Any]] = BEAT_SCHEDULE) -> list[str]:
    """Make the periodic tasks in the database the code's `schedule`; returns the names it wrote or deleted.

    Idempotent: a second run writes nothing. The rows are locked, so two beats starting at once (which the
    chart never does) cannot interleave their writes.
    """
    existing = {task.name: task for task in PeriodicTask.objects.select_for_update()}
    changed = []
    for name, entry in schedule.items():
        wanted: dict[str, Any] = {
            "task": entry["task"],
            **_schedule_fields(entry["schedule"]),
            "solar": None,
            "clocked": None,
            "args": "[]",
            "kwargs": "{}",
            "one_off": False,
            "enabled": True,
        }
        task = existing.get(name)
        if task is None:
            PeriodicTask.objects.create(name=name, **wanted)
            changed.append(name)
        elif fields := [field for field, value in wanted.items() if getattr(task, field) != value]:
            for field in fields:
                setattr(task, field, wanted[field])
            task.save(update_fields=fields)
            changed.append(name)
    stale = [name for name in existing if name not in schedule]
    for name in stale:
        existing[name].delete()  # the model's delete: it tells a running scheduler
    return changed + stale


class Scheduler(DatabaseScheduler):
    """CELERY_BEAT_SCHEDULER: the database scheduler, its rows synced from the code first."""

    def setup_schedule(self) -> None:
        # Instead of the parent's: it would only add and update the code's entries (never remove one), and add
        # celery.backend_cleanup, which has nothing to clean here (results are ignored).
        beat_schedule_sync(self.app.conf.beat_schedule)
