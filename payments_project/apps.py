from django.apps import AppConfig
from django.conf import settings

from payments_project.tracing import tracing_start


class PaymentsProjectConfig(AppConfig):
    name = "payments_project"
    verbose_name = "Payments"

    def ready(self) -> None:
        # Every process passes here before its first request, connection or task: the one place to trace from.
        if settings.OTEL_EXPORTER_OTLP_ENDPOINT:
            tracing_start()
