"""WSGI entry point (gunicorn payments_project.wsgi)."""

import gc
import os

from django.core.wsgi import get_wsgi_application

from payments_project.env import set_default_settings_module

# A web process: the short PostgreSQL timeouts (settings: DATABASE_SESSION_TIMEOUTS).
os.environ.setdefault("PROCESS_KIND", "web")
set_default_settings_module()
django_application = get_wsgi_application()

from payments_project.hot_path import HotPathApplication  # noqa: E402 - needs the apps loaded

# The entitlement checks and webhook deliveries skip Django's handler (payments_project.hot_path).
application = HotPathApplication(django_application)

# What the loaded project holds (about 300,000 objects) lives as long as the process: out of the collector's
# reach, a full collection no longer scans it all (half a second with every thread of the worker stopped,
# a few times a minute under webhook load: issue 17's p99). Garbage made while loading is collected first.
gc.collect()
gc.freeze()
