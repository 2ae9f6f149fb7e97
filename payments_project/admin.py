"""Beat's schedule in admin (django-celery-beat's pages): ops and finance see the periodic tasks and when each
last ran; only a superuser changes them (pause, run now), and the code's schedule wins again at beat's next
start (payments_project/beat.py)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from payments_project.roles import Role, RoleRestrictedAdmin


class _SuperuserChanges(RoleRestrictedAdmin):
    view_roles = (Role.OPS, Role.FINANCE)

    def get_actions(self, request: HttpRequest) -> Any:
        # enable, disable, toggle and "run now" change what beat does: the same rule as editing a row
        return super().get_actions(request) if self.has_change_permission(request) else {}  # type: ignore[misc]


for model, model_admin in (
    (PeriodicTask, beat_admin.PeriodicTaskAdmin),
    (IntervalSchedule, beat_admin.IntervalScheduleAdmin),
    (CrontabSchedule, beat_admin.CrontabScheduleAdmin),
    (SolarSchedule, beat_admin.SolarScheduleAdmin),
    (ClockedSchedule, beat_admin.ClockedScheduleAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, type(model_admin.__name__, (_SuperuserChanges, model_admin), {}))
