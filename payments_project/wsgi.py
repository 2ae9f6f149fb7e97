"""WSGI entry point (gunicorn payments_project.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

from payments_project.env import set_default_settings_module

# A web process: the short PostgreSQL timeouts (settings: DATABASE_SESSION_TIMEOUTS).
os.environ.setdefault("PROCESS_KIND", "web")
set_default_settings_module()
application = get_wsgi_application()
