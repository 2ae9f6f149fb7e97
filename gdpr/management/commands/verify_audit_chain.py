"""`manage.py verify_audit_chain [--anchor SEQ:HASH]`: seal the pending audit events, walk the audit
trail's hash chain; exit 1 at the first broken link. Events appended while it runs are reported pending.

The chain shows any change or removal inside the trail; only the removal of its newest rows leaves no
broken link. Against that, keep the head it prints somewhere else (a log, a ticket) and pass it back
later as `--anchor`: the row must still be there with the same hash.
"""

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gdpr.audit import audit_seal_pending, pending_count, verify_chain
from gdpr.models import AuditEvent

_ANCHOR = re.compile(r"(?P<seq>[1-9][0-9]*):(?P<hash>[0-9a-f]{64})")


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; report the first broken link and exit non-zero."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--anchor", default="", help="SEQ:HASH of a head printed by an earlier run")

    def handle(self, *args: Any, **options: Any) -> None:
        anchor = _ANCHOR.fullmatch(options["anchor"]) if options["anchor"] else None
        if options["anchor"] and anchor is None:
            raise CommandError("--anchor must be SEQ:HASH, as printed by an earlier run")
        while audit_seal_pending():
            pass
        checked, broken = verify_chain()
        if broken is not None:
            raise CommandError(f"{broken} ({checked} events before it are intact)", returncode=1)
        if anchor is not None:
            kept = AuditEvent.objects.filter(seq=int(anchor["seq"])).values_list("hash", flat=True).first()
            if kept != anchor["hash"]:
                raise CommandError(
                    f"audit chain anchor seq {anchor['seq']} is {'missing' if kept is None else 'different'}: "
                    "the trail was truncated or rewritten",
                    returncode=1,
                )
        head = AuditEvent.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "hash").first()
        anchor_text = f"; head {head[0]}:{head[1]}" if head else ""
        pending = pending_count()
        pending_text = f"; {pending} appended since, not sealed yet" if pending else ""
        self.stdout.write(
            self.style.SUCCESS(f"Audit chain intact: {checked} events verified{anchor_text}{pending_text}.")
        )
