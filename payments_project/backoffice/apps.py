from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class JiaAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin whose default site is ours (MFA gate, finance dashboard)."""

    default = False
    default_site = "payments_project.backoffice.site.AdminSite"


class BackofficeConfig(AppConfig):
    """The admin site's wiring (MFA gate, lockouts, finance dashboard). It sits with payments_project's
    wiring on top of the apps: it reads every app's models, and no app imports it."""

    name = "payments_project.backoffice"
    label = "backoffice"
    default = True
    verbose_name = "Staff access"

    def ready(self) -> None:
        from payments_project.backoffice import lockout  # noqa: F401 - connects the lockout audit and the session clock
