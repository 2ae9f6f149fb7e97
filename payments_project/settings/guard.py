"""The production guard: the service refuses to start on an insecure setting, naming every one."""

from collections.abc import Mapping
from typing import Any

MIN_SECRET_KEY_LENGTH = 50
INSECURE_BROKER_SCHEMES = ("filesystem://", "memory://")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
MIN_HMAC_KEY_BYTES = 32  # RFC 7518 3.2: at least the hash size; payments_project.auth refuses shorter keys too
SERVICE_AUTH_MODES = ("xfcc", "none")


def production_problems(settings: Mapping[str, Any]) -> list[str]:
    """Every reason these settings are unfit for production; empty when they are fine."""
    problems: list[str] = []
    if settings.get("DEBUG"):
        problems.append("DEBUG must be off")

    secret_key = settings.get("SECRET_KEY") or ""
    if not secret_key:
        problems.append("SECRET_KEY is missing")
    elif secret_key == settings.get("DEV_SECRET_KEY") or secret_key.startswith("django-insecure"):
        problems.append("SECRET_KEY is the development default")
    elif len(secret_key) < MIN_SECRET_KEY_LENGTH:
        problems.append(f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters")

    database_url = settings.get("DATABASE_URL") or ""
    if not database_url:
        problems.append("DATABASE_URL is missing")
    elif database_url.startswith("sqlite"):
        problems.append("DATABASE_URL must not be SQLite")

    broker_url = settings.get("CELERY_BROKER_URL") or ""
    if not broker_url:
        problems.append("CELERY_BROKER_URL is missing")
    elif broker_url.startswith(INSECURE_BROKER_SCHEMES):
        problems.append("CELERY_BROKER_URL must not use the filesystem or memory transport")

    hosts = settings.get("ALLOWED_HOSTS") or []
    if not hosts:
        problems.append("ALLOWED_HOSTS is empty")
    elif "*" in hosts:
        problems.append("ALLOWED_HOSTS must not contain '*'")

    if not settings.get("REDIS_URL"):
        problems.append("REDIS_URL is missing")

    algorithm = settings.get("JWT_ALGORITHM") or ""
    signing_key = settings.get("JWT_SIGNING_KEY") or ""
    if algorithm in HMAC_ALGORITHMS:
        if not signing_key:
            problems.append(f"JWT_SIGNING_KEY is empty (required for {algorithm})")
        elif len(signing_key.encode()) < MIN_HMAC_KEY_BYTES:
            problems.append(f"JWT_SIGNING_KEY is shorter than {MIN_HMAC_KEY_BYTES} bytes")
    elif algorithm not in ASYMMETRIC_ALGORITHMS:
        supported = ", ".join(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)
        problems.append(f"JWT_ALGORITHM must be one of {supported}, not {algorithm!r}")
    elif not (settings.get("JWT_VERIFYING_KEY") or settings.get("JWT_JWKS_URL")):
        problems.append(f"JWT_VERIFYING_KEY or JWT_JWKS_URL is required for {algorithm}")
    jwks_url = settings.get("JWT_JWKS_URL") or ""
    if jwks_url and not jwks_url.startswith("https://"):
        problems.append("JWT_JWKS_URL must be an https:// URL")
    if not settings.get("JWT_ISSUER"):
        problems.append("JWT_ISSUER is empty")
    if not settings.get("JWT_AUDIENCE"):
        problems.append("JWT_AUDIENCE is empty")

    mode = settings.get("SERVICE_AUTH_MODE") or "none"
    if mode not in SERVICE_AUTH_MODES:
        problems.append(f"SERVICE_AUTH_MODE must be one of {', '.join(SERVICE_AUTH_MODES)}, not {mode!r}")
    elif mode == "xfcc":
        if not settings.get("SPIFFE_TRUST_BUNDLE"):
            problems.append("SPIFFE_TRUST_BUNDLE is empty (required when SERVICE_AUTH_MODE=xfcc)")
        if not settings.get("SPIFFE_TRUST_DOMAIN"):
            problems.append("SPIFFE_TRUST_DOMAIN is empty (required when SERVICE_AUTH_MODE=xfcc)")
    if int(settings.get("TRUSTED_PROXY_COUNT") or 0) < 0:
        problems.append("TRUSTED_PROXY_COUNT must not be negative")

    if not settings.get("STRIPE_API_KEY"):
        problems.append("STRIPE_API_KEY is empty")
    if not [secret for secret in settings.get("STRIPE_WEBHOOK_SECRETS") or [] if secret]:
        problems.append("STRIPE_WEBHOOK_SECRETS is empty")
    return problems
