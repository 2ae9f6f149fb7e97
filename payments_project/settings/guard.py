"""The production guard: the service refuses to start on an insecure setting, naming every one.

RULES is the whole policy: each rule is a predicate over the settings, true when they are unfit, with
its message (`{NAME}` in a message is the setting's value). Rules about one setting exclude each other,
so each problem is named once.
"""

from collections.abc import Callable, Mapping
from typing import Any

MIN_SECRET_KEY_LENGTH = 50
INSECURE_BROKER_SCHEMES = ("filesystem://", "memory://")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
MIN_HMAC_KEY_BYTES = 32  # RFC 7518 3.2: at least the hash size; payments_project.auth refuses shorter keys too
SERVICE_AUTH_MODES = ("xfcc", "none")

Settings = Mapping[str, Any]
Rule = Callable[[Settings], bool]


def _text(settings: Settings, name: str) -> str:
    return str(settings.get(name) or "")


def _is_development_key(s: Settings) -> bool:
    key = _text(s, "SECRET_KEY")
    return bool(key) and (key == s.get("DEV_SECRET_KEY") or key.startswith("django-insecure"))


def _hmac(s: Settings) -> bool:
    return _text(s, "JWT_ALGORITHM") in HMAC_ALGORITHMS


def _xfcc(s: Settings) -> bool:
    return _text(s, "SERVICE_AUTH_MODE") == "xfcc"


RULES: tuple[tuple[Rule, str], ...] = (
    (lambda s: bool(s.get("DEBUG")), "DEBUG must be off"),
    (lambda s: not s.get("SECRET_KEY"), "SECRET_KEY is missing"),
    (_is_development_key, "SECRET_KEY is the development default"),
    (
        lambda s: 0 < len(_text(s, "SECRET_KEY")) < MIN_SECRET_KEY_LENGTH and not _is_development_key(s),
        f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters",
    ),
    (lambda s: not s.get("DATABASE_URL"), "DATABASE_URL is missing"),
    (lambda s: _text(s, "DATABASE_URL").startswith("sqlite"), "DATABASE_URL must not be SQLite"),
    (lambda s: not s.get("CELERY_BROKER_URL"), "CELERY_BROKER_URL is missing"),
    (
        lambda s: _text(s, "CELERY_BROKER_URL").startswith(INSECURE_BROKER_SCHEMES),
        "CELERY_BROKER_URL must not use the filesystem or memory transport",
    ),
    (lambda s: not s.get("ALLOWED_HOSTS"), "ALLOWED_HOSTS is empty"),
    (lambda s: "*" in (s.get("ALLOWED_HOSTS") or []), "ALLOWED_HOSTS must not contain '*'"),
    (lambda s: not s.get("REDIS_URL"), "REDIS_URL is missing"),
    (lambda s: _hmac(s) and not s.get("JWT_SIGNING_KEY"), "JWT_SIGNING_KEY is empty (required for {JWT_ALGORITHM})"),
    (
        lambda s: _hmac(s) and 0 < len(_text(s, "JWT_SIGNING_KEY").encode()) < MIN_HMAC_KEY_BYTES,
        f"JWT_SIGNING_KEY is shorter than {MIN_HMAC_KEY_BYTES} bytes",
    ),
    (
        lambda s: _text(s, "JWT_ALGORITHM") not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS,
        "JWT_ALGORITHM must be one of "
        + ", ".join(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)
        + ", not {JWT_ALGORITHM!r}",
    ),
    (
        lambda s: (
            _text(s, "JWT_ALGORITHM") in ASYMMETRIC_ALGORITHMS
            and not (s.get("JWT_VERIFYING_KEY") or s.get("JWT_JWKS_URL"))
        ),
        "JWT_VERIFYING_KEY or JWT_JWKS_URL is required for {JWT_ALGORITHM}",
    ),
    (
        lambda s: bool(s.get("JWT_JWKS_URL")) and not _text(s, "JWT_JWKS_URL").startswith("https://"),
        "JWT_JWKS_URL must be an https:// URL",
    ),
    (lambda s: not s.get("JWT_ISSUER"), "JWT_ISSUER is empty"),
    (lambda s: not s.get("JWT_AUDIENCE"), "JWT_AUDIENCE is empty"),
    (
        lambda s: (_text(s, "SERVICE_AUTH_MODE") or "none") not in SERVICE_AUTH_MODES,
        "SERVICE_AUTH_MODE must be one of " + ", ".join(SERVICE_AUTH_MODES) + ", not {SERVICE_AUTH_MODE!r}",
    ),
    (
        lambda s: _xfcc(s) and not s.get("SPIFFE_TRUST_BUNDLE"),
        "SPIFFE_TRUST_BUNDLE is empty (required when SERVICE_AUTH_MODE=xfcc)",
    ),
    (
        lambda s: _xfcc(s) and not s.get("SPIFFE_TRUST_DOMAIN"),
        "SPIFFE_TRUST_DOMAIN is empty (required when SERVICE_AUTH_MODE=xfcc)",
    ),
    (
        lambda s: _xfcc(s) and not s.get("SERVICE_SPIFFE_ID"),
        "SERVICE_SPIFFE_ID is empty (required when SERVICE_AUTH_MODE=xfcc: the By= our sidecar writes)",
    ),
    (
        lambda s: bool(s.get("SERVICE_SPIFFE_ID")) and not _text(s, "SERVICE_SPIFFE_ID").startswith("spiffe://"),
        "SERVICE_SPIFFE_ID must be a spiffe:// ID, not {SERVICE_SPIFFE_ID!r}",
    ),
    (
        lambda s: s.get("TRUSTED_PROXY_COUNT") is None,
        "TRUSTED_PROXY_COUNT is not set (how many proxies in front append to X-Forwarded-For; 0 for none)",
    ),
    (lambda s: int(s.get("TRUSTED_PROXY_COUNT") or 0) < 0, "TRUSTED_PROXY_COUNT must not be negative"),
    (
        lambda s: int(s.get("ENTITLEMENTS_PAST_DUE_GRACE_DAYS") or 0) < 0,
        "ENTITLEMENTS_PAST_DUE_GRACE_DAYS must not be negative",
    ),
    (
        # Unset, production derives it from ALLOWED_HOSTS (always https).
        lambda s: bool(s.get("ADMIN_ORIGIN")) and not _text(s, "ADMIN_ORIGIN").startswith("https://"),
        "ADMIN_ORIGIN must be an https:// origin (staff passkeys are bound to it), not {ADMIN_ORIGIN!r}",
    ),
    (
        lambda s: not s.get("CHECKOUT_RETURN_URL_ORIGINS"),
        "CHECKOUT_RETURN_URL_ORIGINS is empty (the origins checkout and portal return URLs may point at)",
    ),
    (
        lambda s: any(not str(o).startswith("https://") for o in s.get("CHECKOUT_RETURN_URL_ORIGINS") or ()),
        "CHECKOUT_RETURN_URL_ORIGINS must hold https:// origins only",
    ),
    (
        lambda s: int(s.get("WEBHOOK_INBOX_RETENTION_DAYS", 31)) < 31,
        "WEBHOOK_INBOX_RETENTION_DAYS must be at least 31, not {WEBHOOK_INBOX_RETENTION_DAYS} (an event pruned "
        "sooner could be redelivered or listed by the gap-filling, and processed again)",
    ),
    (lambda s: not s.get("STRIPE_API_KEY"), "STRIPE_API_KEY is empty"),
    (lambda s: not any(s.get("STRIPE_WEBHOOK_SECRETS") or []), "STRIPE_WEBHOOK_SECRETS is empty"),
    (
        lambda s: not s.get("GDPR_PSEUDONYM_KEY"),
        "GDPR_PSEUDONYM_KEY is empty (erased users' pseudonyms must not change when SECRET_KEY is rotated)",
    ),
    (
        lambda s: _text(s, "GDPR_EXPORT_STORAGE") != "s3",
        "GDPR_EXPORT_STORAGE must be s3 (pods share no disk and their root filesystem is read-only), "
        "not {GDPR_EXPORT_STORAGE!r}",
    ),
    (
        lambda s: _text(s, "GDPR_EXPORT_STORAGE") == "s3" and not s.get("GDPR_EXPORT_BUCKET"),
        "GDPR_EXPORT_BUCKET is empty (required when GDPR_EXPORT_STORAGE=s3)",
    ),
)


class _MessageValues(dict[str, Any]):
    """What a message shows of a setting: its value, or '' when it is unset or empty."""

    def __missing__(self, key: str) -> str:
        return ""


def production_problems(settings: Settings) -> list[str]:
    """Every reason these settings are unfit for production; empty when they are fine."""
    values = _MessageValues({name: value for name, value in settings.items() if value})
    return [message.format_map(values) for rule, message in RULES if rule(settings)]


def loaded_settings_problems(settings: Any, *, environment: str | None, production_module: str) -> list[str]:
    """The guard for settings already loaded from any module (payments_project.apps runs it at start-up).

    DJANGO_ENV=production holds whichever DJANGO_SETTINGS_MODULE was set by hand to the production rules,
    and that module must be the production one. The production module guards itself as it loads.
    """
    module = settings.SETTINGS_MODULE
    if environment != "production" or module == production_module:
        return []
    values = {name: getattr(settings, name) for name in dir(settings) if name.isupper()}
    problems = [f"DJANGO_SETTINGS_MODULE is {module!r}, not {production_module!r} (DJANGO_ENV=production)"]
    return problems + production_problems(values)
