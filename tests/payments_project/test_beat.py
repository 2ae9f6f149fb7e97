"""Beat's schedule lives in the database, synced from the code at start; its admin pages are read-only but for
superusers."""

import sys
from datetime import timedelta
from typing import Any

import pytest
from celery.schedules import crontab
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from payments_project.beat import beat_schedule_sync
from payments_project.celery import app
from payments_project.schedule import BEAT_SCHEDULE
from tests.support.auth import signed_in, staff_client
from tests.support.processes import background_process
from tests.support.worker import purge, worker_env

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/django_celery_beat/periodictask/"


def rows() -> dict[str, tuple[str, bool, str]]:
    """Each periodic task in the database: its task, whether enabled, and its schedule in words."""
    found = {}
    for task in PeriodicTask.objects.select_related("interval", "crontab"):
        if task.interval:
            every = f"every {task.interval.every} {task.interval.period}"
        else:
            c = task.crontab
            every = f"cron {c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week} {c.timezone}"
        found[task.name] = (task.task, task.enabled, every)
    return found


def in_words(every: float | crontab) -> str:
    if isinstance(every, crontab):
        c = CrontabSchedule.from_schedule(every)
        return f"cron {c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week} {c.timezone}"
    return f"every {int(every)} seconds"


def test_the_sync_writes_the_codes_schedule_into_the_database() -> None:
    changed = beat_schedule_sync()

    assert sorted(changed) == sorted(BEAT_SCHEDULE)
    assert rows() == {name: (entry["task"], True, in_words(entry["schedule"])) for name, entry in BEAT_SCHEDULE.items()}
    assert rows()["reconciliation-state-compare"] == ("reconciliation.state_compare", True, "cron 17 3 * * * UTC")


def test_syncing_again_writes_nothing_and_keeps_each_jobs_last_run() -> None:
    beat_schedule_sync()
    ran = timezone.now() - timedelta(hours=20)
    PeriodicTask.objects.filter(name="reconciliation-state-compare").update(last_run_at=ran)
    before = {task.name: (task.id, task.date_changed) for task in PeriodicTask.objects.all()}

    changed = beat_schedule_sync()

    assert changed == []
    assert {task.name: (task.id, task.date_changed) for task in PeriodicTask.objects.all()} == before
    assert PeriodicTask.objects.get(name="reconciliation-state-compare").last_run_at == ran
    assert IntervalSchedule.objects.filter(every=300).count() == 1
    assert CrontabSchedule.objects.filter(minute="17", hour="3").count() == 1


def test_the_code_wins_over_rows_changed_added_or_paused_in_the_database() -> None:
    beat_schedule_sync()
    slower, _ = IntervalSchedule.objects.get_or_create(every=3600, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="gdpr-sweep").update(interval=slower)
    PeriodicTask.objects.filter(name="outbox-dispatch").update(enabled=False)
    PeriodicTask.objects.create(name="old-job-removed-from-code", task="billing.gone", interval=slower)

    changed = beat_schedule_sync()

    assert sorted(changed) == ["gdpr-sweep", "old-job-removed-from-code", "outbox-dispatch"]
    assert "old-job-removed-from-code" not in rows()
    assert rows()["gdpr-sweep"] == ("gdpr.sweep", True, "every 60 seconds")
    assert rows()["outbox-dispatch"] == ("outbox.dispatch", True, "every 10 seconds")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_started_after_a_jobs_hour_runs_the_missed_run_and_records_it_in_the_database() -> None:
    # given the hourly GDPR alert last ran two hours ago: beat was being replaced when last hour's run was due
    # (the nightly reconciliation the same way, when beat is back within two hours of 03:17: django-celery-beat
    # loads a crontab job of a fixed hour only within two hours of it)
    beat_schedule_sync()
    missed = timezone.now() - timedelta(hours=2)
    PeriodicTask.objects.filter(name="gdpr-alert-overdue").update(last_run_at=missed)
    hourly, _ = IntervalSchedule.objects.get_or_create(every=3600, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="old-job-removed-from-code", task="billing.gone", interval=hourly)
    purge(["gdpr"])

    def recorded() -> bool:
        return PeriodicTask.objects.get(name="gdpr-alert-overdue").last_run_at > missed

    # when beat starts (as the chart runs it: the database scheduler)
    command = [sys.executable, "-m", "celery", "-A", "payments_project", "beat", "--max-interval", "1", "-l", "INFO"]
    with background_process(command, name="beat-db-scheduler", ready=recorded, env=worker_env(), timeout=30):
        pass

    # then it sent the missed run at once, wrote when, and had synced the code's schedule in first
    assert "gdpr.alert_overdue" in queued_tasks("gdpr")
    last_run = PeriodicTask.objects.get(name="gdpr-alert-overdue").last_run_at
    assert timezone.now() - last_run < timedelta(seconds=60)
    assert not PeriodicTask.objects.filter(name="old-job-removed-from-code").exists()


def queued_tasks(queue: str) -> list[str]:
    names = []
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            names.append(message.headers["task"])
    return names


def test_a_superuser_changes_the_schedule_in_admin() -> None:
    from django.contrib.auth.models import User

    beat_schedule_sync()
    task = PeriodicTask.objects.get(name="gdpr-sweep")
    root = signed_in(User.objects.create_superuser("root", password="pw"))

    response = root.post(CHANGELIST, {"action": "disable_tasks", "_selected_action": [str(task.id)]})

    assert response.status_code == 302
    assert PeriodicTask.objects.get(id=task.id).enabled is False


@pytest.mark.parametrize("role", ["ops", "finance"])
def test_ops_and_finance_see_the_schedule_and_when_each_job_ran_but_change_nothing(role: str) -> None:
    beat_schedule_sync()
    task = PeriodicTask.objects.get(name="gdpr-sweep")
    staff = staff_client("alice", role)
    purge(["gdpr"])

    listing = staff.get(CHANGELIST)
    detail = staff.get(f"{CHANGELIST}{task.id}/change/")
    edit = staff.post(f"{CHANGELIST}{task.id}/change/", {"name": "gdpr-sweep", "task": "gdpr.sweep", "enabled": ""})
    pause = staff.post(CHANGELIST, {"action": "disable_tasks", "_selected_action": [str(task.id)]})
    run_now = staff.post(CHANGELIST, {"action": "run_tasks", "_selected_action": [str(task.id)]})
    add = staff.get(f"{CHANGELIST}add/")

    assert listing.status_code == 200
    assert b"gdpr-sweep" in listing.content
    assert detail.status_code == 200
    assert b'name="enabled"' not in detail.content  # nothing to edit
    assert edit.status_code == 403
    assert b'name="action"' not in listing.content  # no enable, disable or "run now"
    assert (pause.status_code, run_now.status_code) == (200, 200)  # the list again, nothing done
    assert queued_tasks("gdpr") == []
    assert add.status_code == 403
    assert PeriodicTask.objects.get(id=task.id).enabled is True


def test_staff_without_a_role_see_no_schedule() -> None:
    assert staff_client("carol", None).get(CHANGELIST).status_code == 403
