"""`python manage.py reconcile`: gap-fill Stripe events and compare states now (after an outage)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from webhooks.reconciliation import events_gap_fill, state_compare


class Command(BaseCommand):
    help = "Pull Stripe events the inbox is missing, then compare subscriptions and payments with Stripe."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--events-only", action="store_true", help="skip the state comparison")

    def handle(self, *args: Any, **options: Any) -> None:
        filled = events_gap_fill()
        if filled.skipped:
            self.stdout.write("Gap-filling skipped: another run holds the cursor.")
        else:
            self.stdout.write(f"Events: {filled.events_seen} seen in {filled.pages} page(s), {filled.events_new} new.")
        if options["events_only"]:
            return
        compared = state_compare()
        self.stdout.write(
            f"Compared {compared.compared} object(s): {compared.opened} new discrepancies, "
            f"{compared.fixed} fixed from Stripe, {compared.agreed} resolved as agreeing, "
            f"{len(compared.unreachable)} not reachable."
        )
