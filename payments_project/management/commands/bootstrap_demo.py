"""`make run`'s set-up: a demo admin and a demo client token (development only)."""

import secrets
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from payments_project.management.commands.mint_token import mint_token

DEMO_USER_ID = uuid.UUID("0190c6a8-0000-7000-8000-00000000de30")
DEMO_EMAIL = "demo@jia.example"
DEMO_CATALOG = settings.BASE_DIR / "billing" / "fixtures" / "demo_catalog.json"


class Command(BaseCommand):
    help = "Create the demo admin user and print a demo client JWT (never in production)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.DJANGO_ENV == "production":
            raise CommandError("bootstrap_demo is for development only")
        password = secrets.token_urlsafe(12)
        admin, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True, "email": "admin@jia.example"}
        )
        admin.set_password(password)  # a fresh password every start, printed below
        admin.save(update_fields=["password"])
        call_command("import_catalog", str(DEMO_CATALOG), stdout=self.stdout)  # idempotent: safe every start
        token = mint_token(user_id=DEMO_USER_ID, email=DEMO_EMAIL, ttl_seconds=7 * 24 * 3600)
        port = settings.PORT
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"  Admin:      {settings.ADMIN_ORIGIN}/admin/  user 'admin'  password '{password}'",
                    "              (the first sign-in sets up an authenticator app or a passkey)",
                    f"  API docs:   http://127.0.0.1:{port}/api/docs/",
                    f"  Demo user:  {DEMO_USER_ID} <{DEMO_EMAIL}>",
                    f"  Demo token: {token}",
                    f"  Try:        curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/api/v1/plans",
                    "",
                ]
            )
        )
