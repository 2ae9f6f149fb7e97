"""The project's settings for the benchmark's servers and workers: the test settings (real PostgreSQL,
RabbitMQ, Redis), with production's database connection handling and DEBUG off."""

from payments_project.settings.base import database_config
from payments_project.settings.test import *  # noqa: F403

DEBUG = False
# The test settings close the connection after every request (their threads open their own);
# production keeps it (CONN_MAX_AGE, health checks), and so does the bare baseline app.
DATABASES = {"default": database_config(DATABASE_URL)}  # noqa: F405
CACHES["default"]["KEY_PREFIX"] = "jia-payments-bench"  # noqa: F405
