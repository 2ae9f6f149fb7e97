"""Pick the settings module from DJANGO_ENV: one place for manage.py, WSGI, ASGI and Celery.

Unset, DJANGO_ENV means production: a process that was not told otherwise (a bare container, a
forgotten variable in a manifest) must meet the production guard, never run on development defaults.
`make run` and the tests name their environment.
"""

import os

ENVIRONMENTS = ("development", "test", "production")
DEFAULT_ENVIRONMENT = "production"
PRODUCTION_SETTINGS_MODULE = "payments_project.settings.production"


def django_env() -> str:
    """DJANGO_ENV, production when unset; anything but development/test/production stops the process."""
    env = os.environ.get("DJANGO_ENV", DEFAULT_ENVIRONMENT)
    if env not in ENVIRONMENTS:
        raise SystemExit(f"DJANGO_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    return env


def set_default_settings_module() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"payments_project.settings.{django_env()}")
