"""`make test`: real PostgreSQL, RabbitMQ and Redis on localhost unless the environment says otherwise."""

from payments_project.settings.base import *  # noqa: F403
from payments_project.settings.base import (
    DATABASE_POOL_MAX_SIZE,
    DATABASE_POOL_TIMEOUT_SECONDS,
    DATABASE_SESSION_TIMEOUTS,
    PROCESS_KIND,
    VAR_DIR,
)
from payments_project.settings.parsing import (
    broker_transport_options,
    cache_config,
    database_config,
    env,
    return_url_origins,
)

DATABASE_URL = env.str("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/jia_payments")
DATABASES = {
    "default": database_config(
        DATABASE_URL,
        pool_max_size=DATABASE_POOL_MAX_SIZE,
        pool_timeout=DATABASE_POOL_TIMEOUT_SECONDS,
        session_timeouts=DATABASE_SESSION_TIMEOUTS[PROCESS_KIND],
    )
}
DATABASES["default"]["CONN_MAX_AGE"] = 0  # threads in concurrency tests open and close their own
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672//")
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL, var_dir=VAR_DIR)
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/15")
CACHES = cache_config(REDIS_URL)
CACHES["default"]["KEY_PREFIX"] = "jia-payments-test"

# The sidecar identity tests/support/auth.xfcc writes in By=.
SERVICE_SPIFFE_ID = "spiffe://jia.test/ns/payments/sa/payments"
JWT_SIGNING_KEY = env.str("JWT_SIGNING_KEY", default="test-only-jwt-signing-key-0123456789-0123456789")
STRIPE_WEBHOOK_SECRETS = env.list("STRIPE_WEBHOOK_SECRETS", default=["whsec_test_secret"])
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests
WHITENOISE_USE_FINDERS = True
# The front end the tests' checkouts come back to.
CHECKOUT_RETURN_URL_ORIGINS = return_url_origins(
    "CHECKOUT_RETURN_URL_ORIGINS", env.str("CHECKOUT_RETURN_URL_ORIGINS", default="https://app.example")
)
