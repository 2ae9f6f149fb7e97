from django.apps import AppConfig


class EntitlementsConfig(AppConfig):
    name = "entitlements"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from entitlements import signals  # noqa: F401 - refreshes after client-made billing changes
        from entitlements.personal_data import PROVIDER
        from gdpr.registry import register

        register(PROVIDER)  # GDPR export and erasure of family membership, invitations, entitlement snapshots
