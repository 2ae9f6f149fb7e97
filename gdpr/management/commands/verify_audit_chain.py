"""`manage.py verify_audit_chain`: walk the audit trail's hash chain; exit 1 at the first broken link."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gdpr.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; report the first broken link and exit non-zero."

    def handle(self, *args: Any, **options: Any) -> None:
        checked, broken = verify_chain()
        if broken is not None:
            raise CommandError(f"{broken} ({checked} events before it are intact)", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {checked} events verified."))
