from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from gdpr.registry import register
        from webhooks import stripe_handlers  # noqa: F401  (registers the Stripe event handlers)
        from webhooks.personal_data import PROVIDER

        register(PROVIDER)  # GDPR export and erasure of raw events naming the customer
