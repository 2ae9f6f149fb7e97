from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class JiaAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin whose default site is ours (MFA gate, finance dashboard)."""

    default = False
    default_site = "backoffice.site.AdminSite"


class BackofficeConfig(AppConfig):
    name = "backoffice"
    default = True
    verbose_name = "Staff access"

    def ready(self) -> None:
        from backoffice import lockout  # noqa: F401 - connects the lockout audit and the session clock
