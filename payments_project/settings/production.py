"""Production: every secret from the environment (or NAME_FILE), no defaults, and a guard that refuses
to start on anything insecure. Web, worker, beat and manage.py all load this module first."""

from django.core.exceptions import ImproperlyConfigured

from payments_project.settings.base import *  # noqa: F403
from payments_project.settings.base import (
    DATABASE_POOL_MAX_SIZE,
    DATABASE_POOL_TIMEOUT_SECONDS,
    DATABASE_SESSION_TIMEOUTS,
    PROCESS_KIND,
    VAR_DIR,
)
from payments_project.settings.guard import production_problems
from payments_project.settings.parsing import (
    admin_host,
    broker_transport_options,
    cache_config,
    database_config,
    env,
    env_bool,
)

DJANGO_ENV = "production"  # also when chosen by DJANGO_SETTINGS_MODULE alone
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
DATABASE_URL = env.str("DATABASE_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
# How many proxies append to X-Forwarded-For is a fact of the deployment: no default (the guard says so).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=None)
# Staff reach the admin at the service's own host unless told otherwise (passkeys are bound to it).
ADMIN_ORIGIN = env.str("ADMIN_ORIGIN", default=f"https://{ALLOWED_HOSTS[0]}" if ALLOWED_HOSTS else "").rstrip("/")

_problems = production_problems(globals())
if _problems:
    raise ImproperlyConfigured("Refusing to start in production: " + "; ".join(_problems) + ".")

DATABASES = {
    "default": database_config(
        DATABASE_URL,
        pool_max_size=DATABASE_POOL_MAX_SIZE,
        pool_timeout=DATABASE_POOL_TIMEOUT_SECONDS,
        session_timeouts=DATABASE_SESSION_TIMEOUTS[PROCESS_KIND],
    )
}
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL, var_dir=VAR_DIR)
CACHES = cache_config(REDIS_URL)
OTP_WEBAUTHN_RP_ID = admin_host(ADMIN_ORIGIN)
OTP_WEBAUTHN_ALLOWED_ORIGINS = [ADMIN_ORIGIN]

# TLS is terminated in front of us; trust its header and make every cookie and redirect secure.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes speak plain HTTP
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = 31536000  # a year, as preload lists require
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
