"""Pick the settings module from DJANGO_ENV: one place for manage.py, WSGI, ASGI and Celery."""

import os

ENVIRONMENTS = ("development", "test", "production")


def set_default_settings_module() -> None:
    env = os.environ.get("DJANGO_ENV", "development")
    if env not in ENVIRONMENTS:
        raise SystemExit(f"DJANGO_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"payments_project.settings.{env}")
