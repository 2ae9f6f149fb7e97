"""Settings shared by every environment; development.py, test.py and production.py adjust them.

Only what an operator supplies comes from the environment (the README's configuration table lists every
name, and a test keeps the two in step); everything else is a plain setting that tests override with the
settings fixture. Defaults here are the development ones; production.py re-reads the secrets without them.
"""

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from payments_project.logging import logging_config, sentry_init
from payments_project.settings.parsing import (
    admin_host,
    broker_transport_options,
    cache_config,
    database_config,
    env,
    env_bool,
    export_storage,
    networks_from_env,
    rate_limits_from_env,
    return_url_origins,
    service_allowlist_from_env,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"  # SQLite, the filesystem broker and local exports in development

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
DEV_SECRET_KEY = "django-insecure-development-only-key-never-use-in-production-0123456789"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
PORT = env.int("PORT", default=8000)

INSTALLED_APPS = [
    "django_prometheus",
    "payments_project.backoffice.apps.JiaAdminConfig",  # django.contrib.admin with our site: MFA, dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "django_otp_webauthn",
    "axes",
    "rangefilter",
    "django_celery_beat",  # before payments_project, whose admin.py restricts its pages
    "payments_project",
    "tasks",
    "gdpr",
    "billing",
    "entitlements",
    "webhooks",
    "payments_project.backoffice",
]

MIDDLEWARE = [
    # First: the entitlement checks go through only the few below it they need (issue 18).
    "payments_project.middleware.HotPathMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "payments_project.request_timing.RequestDurationMiddleware",
    "payments_project.middleware.RequestIdMiddleware",
    "payments_project.middleware.ProblemJsonMiddleware",
    "payments_project.middleware.BodySizeLimitMiddleware",  # 413 before any view: API_MAX_BODY_BYTES
    "django_ratelimit.middleware.RatelimitMiddleware",  # django-ratelimit's own decorator -> 429 problem
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): signed in with a second factor
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: answers a locked-out sign-in
]

ROOT_URLCONF = "payments_project.urls"
WSGI_APPLICATION = "payments_project.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
# Connections of each process's psycopg pool (0: no pool, one persistent connection per thread). The
# chart sets it for web pods, whose threads share it, and counts it in its connection budget.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=0)
DATABASE_POOL_TIMEOUT_SECONDS = 3.0  # how long a request waits for a pooled connection (then 503)
# What this process is decides how long PostgreSQL lets it run a statement, wait for a lock, or sit idle
# inside a transaction: payments_project/wsgi.py says `web`, the image's entrypoint says `migrate`, and
# everything else (workers, beat, manage.py) is a `worker`. Seconds of (statement_timeout, lock_timeout,
# idle_in_transaction_session_timeout); past one, PostgreSQL cancels it and a request answers 503.
PROCESS_KIND = env.str("PROCESS_KIND", default="worker")
DATABASE_SESSION_TIMEOUTS = {"web": (10, 3, 10), "worker": (120, 30, 120), "migrate": (1800, 60, 600)}
if PROCESS_KIND not in DATABASE_SESSION_TIMEOUTS:
    raise ImproperlyConfigured(
        f"PROCESS_KIND must be one of {', '.join(DATABASE_SESSION_TIMEOUTS)}, not {PROCESS_KIND!r}"
    )
DATABASES = {
    "default": database_config(
        DATABASE_URL,
        pool_max_size=DATABASE_POOL_MAX_SIZE,
        pool_timeout=DATABASE_POOL_TIMEOUT_SECONDS,
        session_timeouts=DATABASE_SESSION_TIMEOUTS[PROCESS_KIND],
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
CACHES = cache_config(REDIS_URL, var_dir=VAR_DIR)

# django-axes' backend first: a locked-out username or IP is refused before its password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- HTTP API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # errors.exception_handler renders; the ratelimit wrapper first counts 401s against the caller's IP.
    "EXCEPTION_HANDLER": "payments_project.ratelimit.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": ["payments_project.auth.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["payments_project.ratelimit.RateLimitThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["payments_project.json_body.JSONBodyParser"],  # size and depth bounded
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Jia Payments API",
    "OAS_VERSION": "3.1.0",  # the service-to-service API is described with 3.1's mutualTLS security scheme
    "DESCRIPTION": "Checkout, subscriptions, payments, entitlements and GDPR requests.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents every response it can give (the Problem schema, 401/429/5xx, headers).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "payments_project.openapi.postprocess"],
}
# The largest JSON body an API endpoint reads (413 above it); the bulk check's 1000 ids take ~45 KiB.
# The webhook endpoint has its own limit, WEBHOOK_MAX_BODY_BYTES.
API_MAX_BODY_BYTES = 128 * 1024
# Paths whose errors are always RFC 9457 problem+json, Django's own 404/500 included.
PROBLEM_JSON_PATH_PREFIXES = ("/api/", "/internal/", "/webhooks/")

# --- Identity ---------------------------------------------------------------------------------
# Previous SECRET_KEYs, kept while rotating so staff sessions survive the switch.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
# Client JWTs (payments_project/auth.py). The algorithm is ours, never the token's.
JWT_ALGORITHM = env.str("JWT_ALGORITHM", default="HS256")
JWT_SIGNING_KEY = env.str("JWT_SIGNING_KEY", default="")  # HS256/384/512
JWT_VERIFYING_KEY = env.str("JWT_VERIFYING_KEY", default="")  # RS*/ES*/EdDSA: a PEM public key (or a JWK)
JWT_JWKS_URL = env.str("JWT_JWKS_URL", default="")  # RS*/ES*/EdDSA: the identity provider's key set
JWT_ISSUER = env.str("JWT_ISSUER", default="")
JWT_AUDIENCE = env.str("JWT_AUDIENCE", default="")
JWT_JWKS_CACHE_SECONDS = 300
JWT_JWKS_REFRESH_COOLDOWN_SECONDS = 30  # the key set is fetched at most this often (after failures too)
JWT_JWKS_TIMEOUT_SECONDS = 3.0  # one fetch, in total; only one request per process ever waits for it
# While the key endpoint fails, the last good set keeps verifying tokens until it is this old (then 503).
JWT_JWKS_MAX_STALE_SECONDS = 6 * 3600
JWT_LEEWAY_SECONDS = 30  # clock skew allowed on exp and nbf
# Verified tokens each process remembers (by sha256, until exp; with a JWKS, JWT_JWKS_CACHE_SECONDS at most).
JWT_VERIFIED_TOKENS_CACHED = 10_000
SIMPLE_JWT = {
    # Only the header parsing and the user class are simplejwt's: verification is ClientTokenBackend's,
    # built from the JWT_* settings above (see payments_project/auth.py).
    "ALGORITHM": JWT_ALGORITHM,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_CLAIM": "sub",
    "TOKEN_TYPE_CLAIM": None,  # tokens come from the identity provider, not from simplejwt
    "JTI_CLAIM": None,
    "AUTH_TOKEN_CLASSES": ("payments_project.auth.ClientToken",),
    "TOKEN_USER_CLASS": "payments_project.auth.Principal",
}
# Service identity for /internal/ (payments_project/service_auth.py): "xfcc" behind the mTLS sidecar;
# any other value closes /internal/ (403).
SERVICE_AUTH_MODE = env.str("SERVICE_AUTH_MODE", default="none")
SPIFFE_TRUST_BUNDLE = env.str("SPIFFE_TRUST_BUNDLE", default="")  # PEM file of the trust domain's CA(s)
SPIFFE_TRUST_DOMAIN = env.str("SPIFFE_TRUST_DOMAIN", default="")
# Which SPIFFE IDs may use which internal endpoints (views declare `required_service_scope`).
# SERVICE_ALLOWLIST is a JSON object {"scope": ["spiffe://...", ...]}; SERVICE_ALLOWLIST_<SCOPE> (dots
# as underscores, e.g. SERVICE_ALLOWLIST_ENTITLEMENTS_READ) is a comma list that replaces one scope.
SERVICE_SCOPES = ("entitlements.read",)
SERVICE_ALLOWLIST = service_allowlist_from_env(SERVICE_SCOPES)
# X-Forwarded-Client-Cert is believed only from these peers (CIDRs, matched against REMOTE_ADDR): the
# sidecar, which reaches us over loopback. From anyone else the header is refused (401).
SERVICE_AUTH_TRUSTED_PEERS = networks_from_env("SERVICE_AUTH_TRUSTED_PEERS", default="127.0.0.0/8,::1/128")
# Our own SPIFFE ID: an XFCC element whose By= names another was not written by our sidecar (refused).
SERVICE_SPIFFE_ID = env.str("SERVICE_SPIFFE_ID", default="")

# --- Rate limits (payments_project/ratelimit.py) ------------------------------------------------
# "count/period" per endpoint group; each overridable by RATE_LIMIT_<GROUP>, e.g. RATE_LIMIT_CHECKOUT=5/m.
RATE_LIMIT_DEFAULTS = {
    "checkout": "10/m",
    "api_read": "300/m",
    "api_write": "60/m",
    "gdpr": "10/h",
    "internal": "6000/m",
    "webhook": "1200/m",  # accepted (correctly signed) deliveries per client IP
    "webhook_rejected": "120/m",  # refused deliveries per client IP: junk never spends the budget above
}
RATE_LIMITS = rate_limits_from_env(RATE_LIMIT_DEFAULTS)
# How many proxies in front of us append to X-Forwarded-For (0: trust only REMOTE_ADDR). Production has
# no default: the chart sets it, and the guard refuses to start without it.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
RATELIMIT_USE_CACHE = "default"
RATELIMIT_VIEW = "payments_project.ratelimit.ratelimited_view"

# --- Return URLs (payments_project/return_urls.py) ---------------------------------------------
# Origins where checkout's success_url/cancel_url and every other return URL may send a payer back to:
# https, or http://localhost in development. Production has no default (the guard says so).
CHECKOUT_RETURN_URL_ORIGINS = return_url_origins(
    "CHECKOUT_RETURN_URL_ORIGINS",
    env.str("CHECKOUT_RETURN_URL_ORIGINS", default="" if DJANGO_ENV == "production" else f"http://localhost:{PORT}"),
)

# --- Staff sign-in to /admin/ (payments_project/backoffice/) -------------------------------------------------------
# Every staff session needs a second factor: TOTP, a passkey or a single-use recovery code; a staff
# member without one enrols at their first sign-in. Passkeys are bound to the host staff use for the
# admin, ADMIN_ORIGIN (production: https://<first ALLOWED_HOSTS entry> unless set).
ADMIN_ORIGIN = env.str("ADMIN_ORIGIN", default=f"http://localhost:{PORT}").rstrip("/")
OTP_TOTP_ISSUER = "Jia Payments"
OTP_WEBAUTHN_RP_NAME = "Jia Payments"
OTP_WEBAUTHN_RP_ID = admin_host(ADMIN_ORIGIN)
OTP_WEBAUTHN_ALLOWED_ORIGINS = [ADMIN_ORIGIN]
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False  # a passkey is the second factor, after the password
MFA_RECOVERY_CODES = 10  # single-use codes made at enrolment, shown once
# Lockout (django-axes, payments_project/backoffice/lockout.py): 5 failed passwords lock a username, 20 lock a client IP
# (so one guesser does not lock out colleagues behind the same address), for an hour or until a
# superuser unlocks them in admin. Client IPs follow TRUSTED_PROXY_COUNT, as rate limits do.
AXES_FAILURE_LIMIT = 5
AXES_IP_FAILURE_LIMIT = 20
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_HANDLER = "payments_project.backoffice.lockout.LockoutHandler"
AXES_CLIENT_IP_CALLABLE = "payments_project.ratelimit.client_ip"
AXES_COOLOFF_TIME = timedelta(hours=1)
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ADMIN = False  # backoffice registers the attempts with roles and an audited unlock
AXES_LOCKOUT_TEMPLATE = "backoffice/locked_out.html"
AXES_VERBOSE = False
# Sessions end after SESSION_COOKIE_AGE without a request (every request pushes the expiry on), and
# after ADMIN_SESSION_MAX_SECONDS whatever happens.
SESSION_SAVE_EVERY_REQUEST = True
# Staff sessions live in the database as JSON: never in the cache, never pickled (Redis holds JSON only).
SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_SERIALIZER = "django.core.signing.JSONSerializer"
SESSION_COOKIE_AGE = 30 * 60
ADMIN_SESSION_MAX_SECONDS = 8 * 3600
# The finance dashboard flags GDPR requests open longer than this (the legal deadline is a month).
DASHBOARD_GDPR_WARNING_DAYS = 20

# --- Stripe -----------------------------------------------------------------------------------
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_WEBHOOK_SECRETS = env.list("STRIPE_WEBHOOK_SECRETS", default=[])
STRIPE_DASHBOARD_URL = "https://dashboard.stripe.com"  # admin's "open in Stripe" links
# Billing's Stripe gateway (billing/gateway.py): timeouts, stripe's own retries, the circuit breaker
# (its state lives in Redis when REDIS_URL is set, so every process sees the same breaker).
STRIPE_CONNECT_TIMEOUT_SECONDS = 3.0
STRIPE_READ_TIMEOUT_SECONDS = 15.0
STRIPE_MAX_NETWORK_RETRIES = 2  # connection errors, 409 and 5xx, with the same idempotency key
STRIPE_BREAKER_FAIL_MAX = 5  # consecutive outages that open the breaker
STRIPE_BREAKER_RESET_SECONDS = 30  # then one probe call after this long
# A process takes a breaker it read closed (no failure counted) as closed this long without asking Redis again
# (a round trip per Stripe call saved): one another process opens is seen this much later at most.
STRIPE_BREAKER_CLOSED_MEMORY_SECONDS = 1.0
# A web request's Stripe calls, retries included, end this long after the request began: then 503 with
# Retry-After (an order is left to its sweep, which asks Stripe again with the same idempotency key).
STRIPE_REQUEST_BUDGET_SECONDS = 5.0
# Stripe calls at once per web process (a bulkhead: half the chart's 4 threads); one more answers 503 at once,
# so a slow Stripe never takes the threads that serve entitlement checks and webhooks...
STRIPE_WEB_CONCURRENCY = 2
# ...unless Stripe answers fast (the last call took less than this, and those holding the permits began less
# than this ago): then it waits for a permit, at most until the oldest of them is this old (gateway._Bulkhead).
# Below Stripe's usual latency (a few hundred ms), so a real, slow or hung Stripe is turned away at once as
# before; an instant one under load saw 15% 503s without it, none with it (bench checkout, issue 18.3).
STRIPE_WEB_PERMIT_WAIT_SECONDS = 0.1
# How long a duplicate checkout/refund request waits for the one already talking to Stripe.
BILLING_IN_FLIGHT_WAIT_SECONDS = 10.0

# --- Webhooks ---------------------------------------------------------------------------------
# Events whose livemode differs from ours are stored and ignored (a test-mode event on production).
STRIPE_LIVEMODE = env_bool("STRIPE_LIVEMODE", STRIPE_API_KEY.startswith(("sk_live_", "rk_live_")))
WEBHOOK_TOLERANCE_SECONDS = 300  # accepted age of a Stripe-Signature timestamp (Stripe's default)
WEBHOOK_MAX_BODY_BYTES = 256 * 1024
# A received event no worker has claimed within this is re-enqueued by the sweeper.
WEBHOOK_PICKUP_GRACE_SECONDS = 60

# --- Reconciliation ---------------------------------------------------------------------------
# Stripe keeps events for 30 days: the gap-filling never looks further back than this.
RECONCILIATION_EVENTS_WINDOW_DAYS = 30
RECONCILIATION_EVENTS_MAX_PAGES = 50  # pages per run
RECONCILIATION_EVENTS_PAGE_SIZE = 100
RECONCILIATION_LEASE_SECONDS = 900  # how long a gap-filling run owns the cursor
# The nightly comparison looks at subscriptions and payments changed in this window.
RECONCILIATION_COMPARE_WINDOW_HOURS = 48

# --- Entitlements and family plans (entitlements/) --------------------------------------------
# How long a user's resolved features are cached (never past the first grant that ends by itself).
ENTITLEMENTS_CACHE_TTL_SECONDS = 3600
# A past_due subscription keeps granting for this long after its unpaid period began (Stripe retries the
# payment meanwhile); `unpaid` (Stripe gave up) ends access at once.
ENTITLEMENTS_PAST_DUE_GRACE_DAYS = env.int("ENTITLEMENTS_PAST_DUE_GRACE_DAYS", default=7)
FAMILY_INVITATION_TTL_HOURS = 72
ENTITLEMENTS_BULK_MAX_IDS = 1000  # most user ids per POST /internal/v1/entitlements/check
# After this many cache errors in a row a process answers from the database without trying Redis
# for ENTITLEMENTS_CACHE_BREAKER_RESET_SECONDS (a blackholed Redis would otherwise cost every check
# a socket timeout).
# Cached versions and entries each web process keeps (two keys a user), answered without a round trip
# and forgotten when Redis pushes their invalidation (entitlements.cache, redis_cache.TrackedReads).
ENTITLEMENTS_LOCAL_CACHE_KEYS = 20_000
ENTITLEMENTS_CACHE_BREAKER_FAIL_MAX = 3
ENTITLEMENTS_CACHE_BREAKER_RESET_SECONDS = 10

# --- GDPR: data export and erasure (gdpr/) ------------------------------------------------------
# Export archives get a storage of their own (STORAGES["gdpr_exports"]). `local`: files under
# GDPR_EXPORT_STORAGE_LOCATION (make run, tests). `s3`: an S3-compatible object store that web and workers
# share (the image's root filesystem is read-only and pods share no disk; the guard requires it in
# production), through django-storages; credentials from the standard AWS chain (workload identity, else
# AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment), never from these settings. Downloads answer
# 302 to a presigned URL that lives GDPR_EXPORT_URL_TTL_SECONDS.
GDPR_EXPORT_STORAGE = env.str("GDPR_EXPORT_STORAGE", default="local")
GDPR_EXPORT_BUCKET = env.str("GDPR_EXPORT_BUCKET", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="")  # empty: AWS S3 itself
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="")
GDPR_EXPORT_URL_TTL_SECONDS = env.int("GDPR_EXPORT_URL_TTL_SECONDS", default=300)
GDPR_EXPORT_STORAGE_LOCATION = env.str("GDPR_EXPORT_STORAGE_LOCATION", default=str(VAR_DIR / "exports"))
STORAGES["gdpr_exports"] = export_storage(
    GDPR_EXPORT_STORAGE,
    bucket=GDPR_EXPORT_BUCKET,
    endpoint_url=AWS_S3_ENDPOINT_URL,
    region=AWS_S3_REGION_NAME,
    url_ttl_seconds=GDPR_EXPORT_URL_TTL_SECONDS,
    location=GDPR_EXPORT_STORAGE_LOCATION,
)
# How long a finished export can be downloaded; a beat job deletes the file afterwards.
GDPR_EXPORT_TTL_HOURS = env.int("GDPR_EXPORT_TTL_HOURS", default=72)
# The key of the stable pseudonyms that replace an erased user's id (secret). Empty: derived from
# SECRET_KEY — set it in production, so rotating SECRET_KEY does not change the pseudonyms.
GDPR_PSEUDONYM_KEY = env.str("GDPR_PSEUDONYM_KEY", default="")
# A pending request no worker has picked up within this is re-enqueued by the sweeper.
GDPR_PICKUP_GRACE_SECONDS = 120
# The legal deadline is a month: requests still open after this many days raise an alert.
GDPR_OVERDUE_ALERT_DAYS = 25
# Raw webhook bodies are redacted this long after they were received, once processed or ignored.
WEBHOOK_PAYLOAD_RETENTION_DAYS = env.int("WEBHOOK_PAYLOAD_RETENTION_DAYS", default=90)
# Published outbox messages (they carry user ids) are deleted this long after publishing (beat's outbox.prune).
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)
# Processed and ignored inbox rows are deleted this long after they were received (beat, in batches).
WEBHOOK_INBOX_RETENTION_DAYS = env.int("WEBHOOK_INBOX_RETENTION_DAYS", default=180)

# --- Celery (read by payments_project/celery.py through the CELERY_ namespace) -----------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL, var_dir=VAR_DIR)
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # a worker waits out a broker outage of any length (README)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the message for another worker
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A run killed at its hard time limit is requeued too (Celery acks it by default): the claim keeps a
# durable job exactly once, and its attempts (counted at each claim) end a job that always times out.
CELERY_TASK_ACKS_ON_TIMEOUT = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Beat's state (each job's last run) in the database, the code's schedule synced in at start (beat.py); each
# run is recorded as soon as it is sent, so a restart neither repeats nor skips one.
CELERY_BEAT_SCHEDULER = "payments_project.beat:Scheduler"
CELERY_BEAT_SYNC_EVERY = 1
# Set by the Helm chart: the workers' grace period follows the time limit; the metrics port is the pod's.
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
# A run past the soft limit fails as transient (retried); the hard limit kills it (its message is requeued).
CELERY_TASK_SOFT_TIME_LIMIT = max(CELERY_TASK_TIME_LIMIT - 30, CELERY_TASK_TIME_LIMIT // 2)
CELERY_WORKER_METRICS_PORT = env.int("CELERY_WORKER_METRICS_PORT", default=0)
# A process's sends after commit go out at once after a quiet spell, and under load at most once per this
# (tasks.base._Publisher): the nudges of a burst become one message, each at most this late.
TASK_SEND_LINGER_SECONDS = 0.1

# --- Outbox -----------------------------------------------------------------------------------
OUTBOX_EXCHANGE = "payments.events"
OUTBOX_SOURCE = "urn:jia:payments"  # the CloudEvents source
OUTBOX_BATCH_SIZE = 100

# --- Health -----------------------------------------------------------------------------------
READINESS_TIMEOUT_SECONDS = 2.0  # each /readyz check (the chart's readiness probe waits 8 s)

# --- Observability ----------------------------------------------------------------------------
LOGGING = logging_config(LOG_LEVEL)
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)
APP_VERSION = env.str("APP_VERSION", default="")  # the release; the image bakes it in (Dockerfile)
if SENTRY_DSN:
    sentry_init(SENTRY_DSN, environment=DJANGO_ENV, release=APP_VERSION, traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE)
# OpenTelemetry traces over OTLP/HTTP (payments_project/tracing.py), on when set; the SDK reads the rest of its
# OTEL_* variables (service name, sampler, resource) itself.
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
