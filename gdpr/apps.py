from django.apps import AppConfig


class GdprConfig(AppConfig):
    name = "gdpr"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Compliance"

    def ready(self) -> None:
        from gdpr import signals  # noqa: F401 - connects the admin-session audit receivers
        from gdpr.personal_data import PROVIDER
        from gdpr.registry import register

        register(PROVIDER)  # the audit trail, data-subject requests and the outbox's event copies
