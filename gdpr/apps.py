from django.apps import AppConfig


class GdprConfig(AppConfig):
    name = "gdpr"
    default_auto_field = "django.db.models.BigAutoField"
