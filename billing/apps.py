from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: personal_data imports the models, which only load once the registry is ready.
        from billing.personal_data import PROVIDER
        from gdpr.registry import register

        register(PROVIDER)  # GDPR export and erasure of customers, orders, subscriptions, payments, refunds
