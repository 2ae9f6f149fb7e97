"""Print a client JWT for development: `manage.py mint_token --user UUID [--email E] [--ttl S]`."""

import uuid
from datetime import timedelta
from typing import Any

import jwt
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone


def mint_token(*, user_id: uuid.UUID, email: str = "", ttl_seconds: int = 3600) -> str:
    now = timezone.now()
    claims: dict[str, Any] = {"sub": str(user_id), "iat": now, "nbf": now, "exp": now + timedelta(seconds=ttl_seconds)}
    if email:
        claims["email"] = email
    if settings.JWT_ISSUER:
        claims["iss"] = settings.JWT_ISSUER
    if settings.JWT_AUDIENCE:
        claims["aud"] = settings.JWT_AUDIENCE
    return jwt.encode(claims, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)


class Command(BaseCommand):
    help = "Print a signed client JWT (development and test only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, type=uuid.UUID, help="the user's UUID (the sub claim)")
        parser.add_argument("--email", default="")
        parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.DJANGO_ENV == "production":
            raise CommandError("mint_token refuses to run in production: tokens come from the identity provider")
        if not settings.JWT_SIGNING_KEY:
            raise CommandError("mint_token needs JWT_SIGNING_KEY (an HS256/384/512 key)")
        self.stdout.write(mint_token(user_id=options["user"], email=options["email"], ttl_seconds=options["ttl"]))
