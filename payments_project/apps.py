import os

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from payments_project.env import PRODUCTION_SETTINGS_MODULE
from payments_project.settings.guard import loaded_settings_problems
from payments_project.tracing import tracing_start


class PaymentsProjectConfig(AppConfig):
    name = "payments_project"
    verbose_name = "Payments"

    def ready(self) -> None:
        # Every process passes here before its first request, connection or task, whatever its settings
        # module (django-admin, DJANGO_SETTINGS_MODULE set by hand): the guard's second door, and tracing.
        problems = loaded_settings_problems(
            settings, environment=os.environ.get("DJANGO_ENV"), production_module=PRODUCTION_SETTINGS_MODULE
        )
        if problems:
            raise ImproperlyConfigured("Refusing to start in production: " + "; ".join(problems) + ".")
        if settings.OTEL_EXPORTER_OTLP_ENDPOINT:
            tracing_start()
