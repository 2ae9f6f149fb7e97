"""WSGI entry point (gunicorn payments_project.wsgi)."""

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
