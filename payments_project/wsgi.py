"""WSGI entry point (gunicorn payments_project.wsgi)."""

from django.core.wsgi import get_wsgi_application

from payments_project.env import set_default_settings_module

set_default_settings_module()
application = get_wsgi_application()
