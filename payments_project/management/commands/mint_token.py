"""Print a client JWT for development: `manage.py mint_token --user UUID [--email E] [--ttl S]`.

Only where an HMAC signing key is configured, and never in production: there, tokens come from the
identity provider and this service holds no key that could sign one.
"""

import uuid
from datetime import timedelta
from typing import Any

import jwt
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from payments_project.auth import HMAC_ALGORITHMS, MIN_HMAC_KEY_BYTES

MAX_TTL_SECONDS = 30 * 24 * 3600


def mint_token(*, user_id: uuid.UUID, email: str = "", ttl_seconds: int = 3600, scopes: str = "") -> str:
    """A token this service accepts, signed with JWT_SIGNING_KEY (development and tests only)."""
    if settings.DJANGO_ENV == "production":
        raise RuntimeError("tokens are never minted in production")
    if settings.JWT_ALGORITHM not in HMAC_ALGORITHMS:
        raise RuntimeError(f"mint_token signs with JWT_SIGNING_KEY; JWT_ALGORITHM is {settings.JWT_ALGORITHM}")
    if len(settings.JWT_SIGNING_KEY.encode()) < MIN_HMAC_KEY_BYTES:
        raise RuntimeError(f"JWT_SIGNING_KEY must be set (at least {MIN_HMAC_KEY_BYTES} bytes)")
    now = timezone.now()
    claims: dict[str, Any] = {"sub": str(user_id), "iat": now, "nbf": now, "exp": now + timedelta(seconds=ttl_seconds)}
    if email:
        claims["email"] = email
    if scopes:
        claims["scope"] = scopes
    if settings.JWT_ISSUER:
        claims["iss"] = settings.JWT_ISSUER
    if settings.JWT_AUDIENCE:
        claims["aud"] = settings.JWT_AUDIENCE
    return jwt.encode(claims, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)


class Command(BaseCommand):
    help = "Print a signed client JWT (development and test only; refuses in production)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, type=uuid.UUID, help="the user's UUID (the sub claim)")
        parser.add_argument("--email", default="")
        parser.add_argument("--scope", default="", help="space-separated scopes")
        parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.DJANGO_ENV == "production":
            raise CommandError("mint_token refuses to run in production: tokens come from the identity provider")
        if not 0 < options["ttl"] <= MAX_TTL_SECONDS:
            raise CommandError(f"--ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
        try:
            token = mint_token(
                user_id=options["user"], email=options["email"], ttl_seconds=options["ttl"], scopes=options["scope"]
            )
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(token)
